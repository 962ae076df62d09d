"""The kernel guard, in a real kernel: what a cell does to the grading environment is undone before the
next cell, and what no lab needs is refused at run time. These cells are not reviewed statically first
(the static review would comment most of them out): this proves the second layer on its own.
"""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from peft_grader import kernel_guard, sandbox

RECORD = "get_ipython().display_pub.publish({'text/plain': 'the record'}, metadata={})"
CELLS = {
    "real_first": "import checks\nprint('verdict:', checks.verdict())",
    "patch_module": (
        "import sys\nimport checks\nchecks.verdict = lambda: 'fake'\n"
        "m = getattr(sys, 'mod' + 'ules')\nobject.__setattr__(m['checks'], 'verdict', lambda: 'fake')"
    ),
    "real_after_patch": "import checks\nprint('verdict:', checks.verdict())",
    "shadow_package": (
        "import os, sys\nos.makedirs('checks', exist_ok=True)\n"
        "open('checks/__init__.py', 'w').write('def verdict():\\n    return \"shadow\"\\n')\n"
        "sys.path.insert(0, os.getcwd())\nsys.modules.pop('checks', None)"
    ),
    "real_after_shadow": "import checks\nprint('verdict:', checks.verdict())",
    "meta_path": (
        "import sys, types\nclass F:\n    def find_spec(self, name, path=None, target=None):\n"
        "        raise ImportError('hooked')\nsys.meta_path.insert(0, F())"
    ),
    "real_after_hook": "import checks\nprint('verdict:', checks.verdict())",
    "patch_builtin": "import builtins\nbuiltins.len = lambda x: 0\nclass AssertionError(Exception): pass",
    "builtin_back": "print('len:', len([1, 2]))",
    "shadow_globals": "def globals():\n    return {}",
    "globals_back": "print('globals:', 'CELLS_RAN' in globals())",
    "import_library": "import safetensors",
    "patch_library": "safetensors.safe_open = lambda *a, **k: 'fake'",
    "library_back": "print('library:', safetensors.safe_open.__name__)",
    "patch_class": "from labutils.errors import CourseError\nCourseError.__str__ = lambda self: 'fake'",
    "class_back": "print('class:', str(CourseError('real')))",
    "own_class": "class Mine:\n    pass\nMine.flag = True\nprint('own class:', Mine.flag)",
    "code_swap": "def f():\n    return 1\nf.__code__ = (lambda: 2).__code__",
    "trace": "import sys\nsys.settrace(lambda *a: None)",
    "gc_objects": "import gc\ngc.collect()\nprint(len(gc.get_objects()))",
    "input_transformer": (
        "ip = get_ipython()\n"
        "ip.input_transformers_post.append(lambda lines: ['try:\\n', '    pass\\n', 'except BaseException:\\n', '    pass\\n'])"
    ),
    "raises_after_transformer": "raise ValueError('this error must be reported')",
    "swallow_tracebacks": "ip = get_ipython()\nip.showtraceback = lambda *a, **k: None",
    "raises_after_showtraceback": "raise ValueError('this one too')",
    # the way a test cell's records reach the grader (checks.evidence): each cell silences or forges it
    "hook_outputs": "get_ipython().display_pub.register_hook(lambda msg: None)",
    "record_after_hook": RECORD,
    "swap_publisher": "class P:\n    def publish(self, *a, **k):\n        pass\nget_ipython().display_pub = P()",
    "record_after_swap": RECORD,
    "publisher_method": "get_ipython().display_pub.publish = lambda *a, **k: None",
    "record_after_method": RECORD,
    "patch_session": "from jupyter_client.session import Session\nSession.send = lambda *a, **k: None",
    "record_after_session": RECORD,
    # learner code left where a library calls it later, a hidden test's forward pass or a collection included
    "registries": (
        "import gc, torch\nfrom torch.overrides import TorchFunctionMode\n"
        "from torch.utils._python_dispatch import TorchDispatchMode\n"
        "torch.nn.modules.module.register_module_forward_hook(lambda m, a, out: out * 0)\n"
        "torch.nn.modules.module.register_module_forward_pre_hook(lambda m, a: None)\n"
        "class Lie(TorchFunctionMode):\n    def __torch_function__(self, f, t, a=(), k=None):\n"
        "        return f(*a, **(k or {}))\nLie().__enter__()\n"
        "class Spy(TorchDispatchMode):\n    def __torch_dispatch__(self, f, t, a=(), k=None):\n"
        "        return f(*a, **(k or {}))\nSpy().__enter__()\n"
        "torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t).__enter__()\n"
        "gc.callbacks.append(lambda phase, info: None)"
    ),
    "registries_back": (
        "import gc, torch\nfrom torch.nn.modules import module\n"
        "print('hooks:', sum(len(v) for k, v in vars(module).items() if k.startswith('_global_') and isinstance(v, dict)),"
        " torch._C._len_torch_function_stack(), torch._C._len_torch_dispatch_stack(),"
        " torch._C._autograd._top_saved_tensors_default_hooks(True), len(gc.callbacks))\n"
        "print('forward:', torch.nn.Linear(2, 2)(torch.ones(2)).abs().sum().item() > 0)"
    ),
    # torch's own mode (set_default_device) and the library's gc callbacks are not the learner's
    "own_modes": "import torch\ntorch.set_default_device('cpu')",
    "own_modes_kept": "import torch\nprint('modes:', torch._C._len_torch_function_stack())",
}


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict[str, nbformat.NotebookNode]:
    root = tmp_path_factory.mktemp("guard")
    grader = root / "grader" / "checks"
    grader.mkdir(parents=True)
    (grader / "__init__.py").write_text("def verdict():\n    return 'real'\n")
    ipython = root / "ipython" / "profile_default" / "startup"
    ipython.mkdir(parents=True)
    (ipython / "00-grading-guard.py").write_text(sandbox.GUARD_STARTUP)
    work = root / "work"
    work.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("CELLS_RAN = True")]
    nb.cells += [nbformat.v4.new_code_cell(src, metadata={"name": name}) for name, src in CELLS.items()]
    env = {"IPYTHONDIR": str(ipython.parents[1]), "PYTHONPATH": str(grader.parent)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(
            nb,
            timeout=60,
            kernel_name="python3",
            allow_errors=True,
            resources={"metadata": {"path": str(work)}},
        ).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return {c.metadata.get("name"): c for c in nb.cells}


def _printed(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _error(cell) -> str:
    return next((f"{o.ename}: {o.evalue}" for o in cell.outputs if o.output_type == "error"), "")


@pytest.mark.parametrize("cell", ["real_first", "real_after_patch", "real_after_shadow", "real_after_hook"])
def test_hidden_cells_import_the_real_checks(ran, cell):
    assert _printed(ran[cell]).strip() == "verdict: real", ran[cell].outputs


def test_builtins_names_and_libraries_are_restored(ran):
    assert _printed(ran["builtin_back"]).strip() == "len: 2"
    assert _printed(ran["globals_back"]).strip() == "globals: True"
    assert _printed(ran["library_back"]).strip() == "library: safe_open"
    assert _printed(ran["class_back"]).strip() == "class: real"


@pytest.mark.parametrize("cell", ["code_swap", "trace", "gc_objects"])
def test_what_no_lab_needs_is_refused(ran, cell):
    assert _error(ran[cell]).startswith("TamperingBlocked: blocked by the grader"), ran[cell].outputs


def _held(cell) -> list[str]:
    return [
        o.data[kernel_guard.HOLD_MIME]["detail"]
        for o in cell.outputs
        if kernel_guard.HOLD_MIME in o.get("data", {})
    ]


def test_code_left_in_a_library_registry_is_removed_and_held(ran):
    """A global module hook, a torch function or dispatch mode, default saved-tensor hooks and a garbage-collector
    callback would run inside a later hidden test: each is gone after its cell and reported; torch's own stay."""
    assert set(_held(ran["registries"])) == {
        "registers a torch global module hook (_global_forward_hooks)",
        "registers a torch global module hook (_global_forward_pre_hooks)",
        "leaves a torch function mode active (Lie)",
        "leaves a torch dispatch mode active (Spy)",
        "leaves default saved-tensor hooks installed",
        "registers a garbage-collector callback",
    }, ran["registries"].outputs
    hooks, forward = _printed(ran["registries_back"]).splitlines()
    assert hooks == "hooks: 0 0 0 None 0" and forward == "forward: True", ran["registries_back"].outputs
    assert _printed(ran["own_modes_kept"]).strip() == "modes: 1" and _held(ran["own_modes"]) == []


def test_the_learners_own_classes_are_theirs(ran):
    assert _printed(ran["own_class"]).strip() == "own class: True"
    assert _error(ran["patch_module"]) == ""  # a module attribute: undone after the cell, not refused


def test_errors_are_still_reported_after_ipython_was_tampered_with(ran):
    assert _error(ran["raises_after_transformer"]) == "ValueError: this error must be reported"
    assert _error(ran["raises_after_showtraceback"]) == "ValueError: this one too"


@pytest.mark.parametrize(
    "cell", ["record_after_hook", "record_after_swap", "record_after_method", "record_after_session"]
)
def test_outputs_reach_the_grader_after_a_cell_tampered_with_them(ran, cell):
    shown = [o.data.get("text/plain") for o in ran[cell].outputs if o.output_type == "display_data"]
    assert shown == ["the record"], ran[cell].outputs


def test_a_watched_cell_notes_each_call_into_learner_code_and_nothing_else(tmp_path):
    """kernel_guard.watch() while a locked cell works (lab 07's Trainer): a call into a function of a learner's cell
    or of a file in the kernel's private folder (its temporary files are the learner's to write) is noted once,
    with where it is; a library's calls are not; the trace goes with the record."""
    import sys

    from peft_grader import kernel_guard

    guard = object.__new__(kernel_guard._Guard)
    guard.watched, guard.watch_files, guard.private = None, {}, os.path.realpath(tmp_path / ".sandbox")
    guard.learners = lambda filename: filename == "<learner cell>"
    guard.where = lambda code, line: {"execution_count": 7, "line": line}
    namespace = {}
    exec(compile("def steer(x):\n    return x + 1\n", "<learner cell>", "exec"), namespace)
    hidden = os.path.join(guard.private, "tmp", "hook.py")
    exec(compile("\n\ndef hook():\n    return 0\n", hidden, "exec"), namespace)
    before = sys.gettrace()
    guard.watch()
    try:
        assert [namespace["steer"](i) for i in range(3)] == [1, 2, 3]
        assert namespace["hook"]() == 0
        os.path.join("a", "b")  # a library's code: not the learner's
    finally:
        found = guard.stop_watching()
        sys.settrace(before)  # pytest's own trace, where coverage or a debugger set one
    assert found == [
        {
            "capability": "learner code inside a locked cell's work",
            "detail": "steer() runs inside a locked cell that trains or measures",
            "execution_count": 7,
            "line": 1,
        },
        {
            "capability": "learner code inside a locked cell's work",
            "detail": "hook() runs inside a locked cell that trains or measures",
            "execution_count": 7,
            "line": 3,
        },
    ]
    assert guard.watched is None and guard.stop_watching() == []
