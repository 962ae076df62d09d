"""The kernel guard's clean room, provenance records and capability evidence, in a real kernel.

A small client plays the trusted executor (peft_grader.sandbox_execute): before a cell marked `clean_room` it
asks the guard for a clean room out of band, after a cell marked `record` it asks for a record, and it keeps
every piece of evidence the guard publishes. The cells are not reviewed statically first: this proves the
kernel's layer on its own. Each hostile cell is paired with what it would change if it worked.
"""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from peft_grader import kernel_guard, sandbox
from peft_grader.nbcourse import GRADER

CELLS = [
    # a callback that survives the guard's after-cell pass: it puts itself back after the guard runs, and
    # counts the cells it ran before
    (
        "reinstalling_callback",
        "RAN = []\n"
        "def count(*args):\n    RAN.append(1)\n"
        "def reinstall(*args):\n"
        "    events = get_ipython().events\n"
        "    for event, cb in (('pre_run_cell', count), ('post_run_cell', reinstall)):\n"
        "        if cb not in events.callbacks[event]:\n            events.register(event, cb)\n"
        "get_ipython().events.register('post_run_cell', reinstall)",
        {},
    ),
    ("learner_cell", "print('before a learner cell:', len(RAN))", {}),
    ("test_cell", "print('before a hidden test:', len(RAN))", {"clean_room": True}),
    # extension points of any type
    (
        "partial_callback",
        "import functools\nSEEN = []\nget_ipython().events.register('pre_run_cell', functools.partial(SEEN.append, 1))",
        {},
    ),
    ("after_partial", "print('partial ran:', len(SEEN))", {}),
    (
        "object_transformer",
        "class Swallow:\n    def __call__(self, lines):\n        return ['pass\\n']\n"
        "get_ipython().input_transformers_post.append(Swallow())",
        {},
    ),
    ("after_transformer", "raise ValueError('this error must be reported')", {}),
    ("custom_handler", "get_ipython().set_custom_exc((AssertionError,), lambda *args, **kwargs: None)", {}),
    ("after_handler", "assert False, 'this failure must be reported'", {"clean_room": True}),
    # the standard library installing a trace or an audit hook on learner code's behalf
    ("bdb_trace", "import bdb\nbdb.Bdb().set_trace()", {}),
    (
        "audit_hook",
        "import sys\nsys.addaudithook(lambda event, args: None)\nprint('addaudithook returned')",
        {},
    ),
    # code no review has read, and frames
    (
        "written_module",
        "open('written_at_run_time.py', 'w').write('X = 1\\n')\nimport written_at_run_time",
        {},
    ),
    ("hand_written_module", "import written_by_hand\nprint(written_by_hand.Y)", {}),
    ("frame_read", "import inspect\nframe = inspect.currentframe()", {}),
    (
        "traceback_frame",
        "try:\n    raise ValueError\nexcept ValueError as err:\n    frame = err.__traceback__.tb_frame",
        {},
    ),
    ("built_code", "exec('z = 1')", {}),
    (
        "thread",
        "import threading, time\nthreading.Thread(target=lambda: time.sleep(60), daemon=True).start()",
        {},
    ),
    ("thread_seen", "print('a hidden test starts')", {"clean_room": True}),
    # honest code in unusual styles: no evidence
    (
        "honest_logging",
        "import logging, warnings\nlogging.basicConfig()\nlogging.getLogger('lab').warning('slow')\n"
        "warnings.filterwarnings('ignore', category=DeprecationWarning)\nwarnings.warn('careful')",
        {},
    ),
    ("honest_time", "%%time\ntotal = sum(range(10))", {}),
    ("honest_timeit", "%timeit -n 1 -r 1 sum(range(10))", {}),
    ("honest_autoreload", "%load_ext autoreload\n%autoreload 2", {}),
    ("honest_after_autoreload", "x = 1", {}),
    (
        "honest_tools",
        "import gc, traceback\nfrom tqdm.auto import tqdm\nfrom IPython.display import display\n"
        "gc.collect()\nlist(tqdm(range(3)))\ndisplay('shown')\ntraceback.print_stack(limit=1)\nbreakpoint()",
        {},
    ),
    ("honest_verbosity", "import transformers\ntransformers.logging.set_verbosity_info()", {}),
    ("honest_capture", "%%capture captured\nprint('quiet')", {}),
    ("honest_plot", "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()", {}),
    ("honest_after_plot", "x = 2", {"clean_room": True}),
    # provenance: what a locked cell measured, recorded right after it ran, whatever a later cell does
    (
        "measure",
        "results = {'a': {'seed_losses': [2.5, 2.0]}, 'b': {'seed_losses': [1.5]}}",
        {"record": {"runs": ["results", "seed_losses"]}},
    ),
    ("edit_results", "results['a']['seed_losses'][0] = 0.1", {}),
    (
        "read_record",
        "import peft_grader.kernel_guard as guard\nprint('recorded:', guard.recorded('measure', 'runs'))",
        {},
    ),
]
HONEST = [name for name, _, _ in CELLS if name.startswith("honest_")]


class Executor(NotebookClient):
    """Plays the trusted executor: the guard's out-of-band requests around the cells that ask for them."""

    replies: list

    async def _ask(self, content):
        msg = self.kc.session.msg(kernel_guard.REQUEST, content)
        self.kc.shell_channel.send(msg)
        reply = (await self.kc._async_recv_reply(msg["header"]["msg_id"], timeout=60))["content"]
        self.replies.append((content, reply))
        return reply

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if cell.metadata.get("clean_room"):
            cell.metadata["clean_room_reply"] = await self._ask({"clean_room": True})
        result = await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        if names := cell.metadata.get("record"):
            reply = await self._ask({"record": {"cell": cell.metadata["name"], "names": names}})
            cell.metadata["recorded"] = reply["records"]
        return result


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict[str, nbformat.NotebookNode]:
    root = tmp_path_factory.mktemp("clean_room")
    startup = root / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-grading-guard.py").write_text(sandbox.GUARD_STARTUP)
    work = root / "work"
    work.mkdir()
    (work / "written_by_hand.py").write_text("Y = 'by hand'\n")  # submitted with the notebook
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"name": name, **meta}) for name, src, meta in CELLS]
    env = {"IPYTHONDIR": str(root / "ipython"), "PYTHONPATH": str(GRADER), **sandbox.KERNEL_ENV}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = Executor(
            nb,
            timeout=120,
            kernel_name="python3",
            allow_errors=True,
            resources={"metadata": {"path": str(work)}},
        )
        client.replies = []
        client.execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return {c.metadata["name"]: c for c in nb.cells}


def _printed(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _error(cell) -> str:
    return next((f"{o.ename}: {o.evalue}" for o in cell.outputs if o.output_type == "error"), "")


def _held(cell) -> list[str]:
    found = [
        o.data[kernel_guard.HOLD_MIME]["detail"]
        for o in cell.outputs
        if kernel_guard.HOLD_MIME in o.get("data", {})
    ]
    return found + [e["detail"] for e in cell.metadata.get("clean_room_reply", {}).get("held", [])]


def test_a_callback_that_reinstalls_itself_runs_before_learner_cells_but_not_before_a_hidden_test(ran):
    before_learner = int(_printed(ran["learner_cell"]).split(":")[1])
    assert before_learner == 1  # it ran before the learner's cell: the after-cell pass alone cannot stop it
    assert (
        _printed(ran["test_cell"]).strip() == f"before a hidden test: {before_learner}"
    )  # the clean room did
    assert "registers an IPython post_run_cell callback (reinstall)" in _held(ran["reinstalling_callback"])


def test_extension_points_of_any_type_are_removed_and_held(ran):
    assert _printed(ran["after_partial"]).strip() == "partial ran: 0"
    assert any("pre_run_cell callback" in h for h in _held(ran["partial_callback"]))
    assert _error(ran["after_transformer"]) == "ValueError: this error must be reported"
    assert _held(ran["object_transformer"]) == ["adds an IPython input transformer"]
    assert _error(ran["after_handler"]) == "AssertionError: this failure must be reported"
    assert "sets a custom exception handler" in _held(ran["custom_handler"])


def test_traces_and_audit_hooks_installed_through_the_standard_library_are_refused(ran):
    assert _error(ran["bdb_trace"]).startswith("TamperingBlocked: blocked by the grader"), ran[
        "bdb_trace"
    ].outputs
    assert "installs a trace function" in _held(ran["bdb_trace"])
    assert "installs an audit hook" in _held(
        ran["audit_hook"]
    )  # refused: CPython drops a refused hook silently


def test_code_no_review_read_and_frame_reads_are_held(ran):
    assert _held(ran["written_module"]) == ["imports written_at_run_time.py, written while the notebook ran"]
    assert _held(ran["hand_written_module"]) == [] and "by hand" in _printed(ran["hand_written_module"])
    assert _held(ran["frame_read"]) == ["reads an interpreter frame"]
    assert _held(ran["traceback_frame"]) == ["reads an interpreter frame"]
    assert "builds code from a string" in _held(ran["built_code"])


def test_a_thread_left_running_is_held_when_a_hidden_test_starts(ran):
    assert any("leaves a thread running" in h for h in _held(ran["thread_seen"]))


@pytest.mark.parametrize("cell", HONEST)
def test_honest_code_runs_and_is_not_held(ran, cell):
    assert _held(ran[cell]) == [], ran[cell].outputs
    assert _error(ran[cell]) == "", ran[cell].outputs


def test_a_locked_cells_measurements_are_recorded_as_they_were(ran):
    assert ran["measure"].metadata["recorded"] == {"runs": {"a": [2.5, 2.0], "b": [1.5]}}
    # not the edited 0.1
    assert _printed(ran["read_record"]).strip() == "recorded: {'a': [2.5, 2.0], 'b': [1.5]}"
