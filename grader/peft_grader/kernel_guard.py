"""Inside a grading kernel: after every cell, undo what it did to the grading environment.

The static review (`peft_grader.tamper`) comments out what can only be tampering; this is the layer that
makes tampering useless when the review could not see it (a name built from strings, an alias, a
file written and imported). Installed by an IPython startup file that the sandbox launcher writes
(`peft_grader.sandbox`), so it runs before the first learner cell. Standard library only.

After every cell (IPython's post_run_cell event), before the next one can run:
- the `checks` package is dropped from `sys.modules`, so each hidden test cell imports it afresh from
  the grader's read-only folder, which is put back first on `sys.path`; the import system's hooks
  (`sys.meta_path`, `sys.path_hooks`) are restored and its caches cleared;
- builtins that a cell replaced are restored, and notebook-level stand-ins for the names hidden test
  cells use (`globals`, `__import__`) are removed;
- IPython's input and AST transformers, its event callbacks and methods replaced on the shell are
  restored;
- functions, classes and class methods replaced on the libraries the checks read (torch, peft,
  transformers, bitsandbytes, safetensors, json, ...) are restored. The guard imports those libraries
  before the first cell, so what it keeps is their pristine state;
- the way outputs leave the kernel is restored: the shell's display publisher, its session and socket,
  methods put on them, and the publisher's message hooks (a test cell's outputs carry the records that
  the grader judges outside the kernel, checks.evidence).

At run time, through an audit hook (which cannot be removed), a learner's cell may not replace a
function's code object, trace or profile frames, list the garbage collector's objects or referrers,
or use ctypes. The operation raises `TamperingBlocked` in that cell; the grader reports it.
"""

from __future__ import annotations

import builtins
import os
import sys
import types

LIBRARIES = (
    "torch",
    "peft",
    "transformers",
    "bitsandbytes",
    "safetensors",
    "accelerate",
    "labutils",
    "peft_grader",
    "json",
    "struct",
    "pathlib",
    # the way a test cell's outputs reach the grader (checks.evidence publishes its records through it)
    "IPython.core.displaypub",
    "ipykernel.zmqshell",
    "jupyter_client.session",
)
BLOCKED_EVENTS = {
    "object.__setattr__": "replaces a function's code or defaults",
    "sys.settrace": "traces frames",
    "sys.setprofile": "profiles frames",
    "gc.get_objects": "lists the garbage collector's objects",
    "gc.get_referrers": "looks up the referrers of an object",
    "gc.get_referents": "looks up the referents of an object",
    "function.__new__": "builds a function from a code object",
}
PROTECTED_NAMES = ("globals", "__import__", "__build_class__")


class TamperingBlocked(RuntimeError):
    """Raised in a learner's cell that tried something no lab needs and only tampering does."""


def _in_cell(frame) -> bool:
    """Whether a frame runs a notebook cell's code (ipykernel names cells /tmp/ipykernel_PID/HASH.py)."""
    name = frame.f_code.co_filename
    return "ipykernel_" in name or name.startswith("<ipython")


def _audit(event: str, args: tuple) -> None:
    if event not in BLOCKED_EVENTS and not event.startswith("ctypes."):
        return
    frame = sys._getframe(1)  # the audit machinery is C: the next Python frame is the caller
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    if frame is None or not _in_cell(frame):
        return  # libraries do these things for their own reasons
    if (
        event == "object.__setattr__"
        and args
        and isinstance(args[0], type)
        and args[0].__module__ == "__main__"
    ):
        return  # a class the learner defined in the notebook
    why = BLOCKED_EVENTS.get(event, "uses ctypes")
    raise TamperingBlocked(f"blocked by the grader: this cell {why} ({event})")


FUNCTIONS = (types.FunctionType, types.MethodType, types.BuiltinFunctionType)
METHODS = (*FUNCTIONS, classmethod, staticmethod, property)


def _from_cell(function) -> bool:
    code = getattr(getattr(function, "__func__", function), "__code__", None)
    return code is not None and ("ipykernel_" in code.co_filename or code.co_filename.startswith("<ipython"))


def _replaced(value, owner) -> bool:
    """A callable put on an instance that is not one of the instance's own bound methods."""
    return callable(value) and getattr(value, "__self__", None) is not owner


def _drop_instance_methods(obj, kept: dict) -> None:
    """Remove callables a cell put on `obj` over its class's attributes (`kept`: its pristine vars)."""
    current = vars(obj)
    for name in [
        n for n, v in current.items() if n not in kept and hasattr(type(obj), n) and _replaced(v, obj)
    ]:
        del current[name]


class _Guard:
    def __init__(self, shell) -> None:
        self.shell = shell
        # the grader's folder, from PYTHONPATH (grader/nbgrader_config.py puts it there), never the cwd
        roots = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        self.checks_root = next(
            (p for p in roots if any(os.path.isfile(f"{p}/checks/__init__.{ext}") for ext in ("py", "pyc"))),
            None,
        )
        self.meta_path = list(sys.meta_path)
        self.path_hooks = list(sys.path_hooks)
        self.builtins = dict(vars(builtins))
        self.transformers = {
            name: list(getattr(shell, name, []))
            for name in ("input_transformers_cleanup", "input_transformers_post", "ast_transformers")
        }
        self.shell_dict = dict(vars(shell))
        publisher = shell.display_pub
        self.outputs = {
            "publisher": publisher,
            "session": getattr(publisher, "session", None),
            "pub_socket": getattr(publisher, "pub_socket", None),
            "hooks": list(getattr(publisher, "_hooks", [])),
        }
        self.outputs_dicts = {
            id(o): dict(vars(o)) for o in (publisher, self.outputs["session"]) if o is not None
        }
        # The libraries the checks read, loaded now, before any cell: their state here is pristine. Every
        # lab imports them in its first cells anyway, so this costs a grading kernel nothing more.
        for library in LIBRARIES:
            try:
                __import__(library)
            except Exception:  # noqa: BLE001 - a missing library is the lab's to report
                pass
        self.libraries: dict[str, tuple[dict, dict]] = {}

    def restore(self, *_args) -> None:
        for name in [m for m in sys.modules if m == "checks" or m.startswith("checks.")]:
            del sys.modules[name]
        sys.meta_path[:] = self.meta_path
        sys.path_hooks[:] = self.path_hooks
        sys.path_importer_cache.clear()
        if self.checks_root:
            while self.checks_root in sys.path:
                sys.path.remove(self.checks_root)
            sys.path.insert(0, self.checks_root)
        current = vars(builtins)
        for name, value in self.builtins.items():
            if current.get(name) is not value:
                current[name] = value
        user_ns = self.shell.user_ns
        for name in PROTECTED_NAMES:
            if name in user_ns and user_ns[name] is not self.builtins.get(name):
                del user_ns[name]
        user_ns["__builtins__"] = builtins
        for name, saved in self.transformers.items():
            getattr(self.shell, name)[:] = saved
        for callbacks in self.shell.events.callbacks.values():  # callbacks a cell registered
            callbacks[:] = [cb for cb in callbacks if not _from_cell(cb)]
        if self.restore not in self.shell.events.callbacks["post_run_cell"]:
            self.shell.events.callbacks["post_run_cell"].append(self.restore)
        shell_dict = vars(self.shell)
        _drop_instance_methods(self.shell, self.shell_dict)  # showtraceback, ... put on the shell
        for name, value in self.shell_dict.items():
            if isinstance(value, FUNCTIONS) and shell_dict.get(name) is not value:
                shell_dict[name] = value
        self._restore_outputs()
        self._restore_libraries()

    def _restore_outputs(self) -> None:
        publisher, session = self.outputs["publisher"], self.outputs["session"]
        if self.shell.display_pub is not publisher:
            self.shell.display_pub = publisher
        for name in ("session", "pub_socket"):
            if self.outputs[name] is not None and getattr(publisher, name, None) is not self.outputs[name]:
                setattr(publisher, name, self.outputs[name])
        for obj in (publisher, session):
            if obj is not None:
                _drop_instance_methods(obj, self.outputs_dicts[id(obj)])
        hooks = getattr(publisher, "_hooks", None)
        if hooks is not None:
            hooks[:] = self.outputs["hooks"]

    def _restore_libraries(self) -> None:
        """Functions and methods of the libraries, as they were when each module was first loaded."""
        for name, module in list(sys.modules.items()):
            if module is None or not any(name == lib or name.startswith(lib + ".") for lib in LIBRARIES):
                continue
            saved = self.libraries.get(name)
            if saved is None:  # loaded since the last cell: its state now is its pristine state
                self.libraries[name] = _snapshot(name, module)
                continue
            functions, classes = saved
            namespace = vars(module)
            for key, value in functions.items():
                if namespace.get(key) is not value:
                    namespace[key] = value
            for cls, (size, members) in classes.items():
                current = vars(cls)
                try:  # one class that refuses (an immutable type) must not stop the rest
                    for key, value in members.items():
                        if current.get(key) is not value:
                            type.__setattr__(cls, key, value)
                    if len(current) != size:  # a method added over an inherited one (__str__ on an exception)
                        for key in [
                            k for k, v in current.items() if k not in members and isinstance(v, FUNCTIONS)
                        ]:
                            type.__delattr__(cls, key)
                except (TypeError, AttributeError):
                    continue


def _snapshot(name: str, module) -> tuple[dict, dict]:
    """A module's functions and classes, and each class's methods and properties."""
    namespace = dict(vars(module))
    functions = {k: v for k, v in namespace.items() if callable(v)}
    classes = {
        v: (len(vars(v)), {k: m for k, m in vars(v).items() if isinstance(m, METHODS) or callable(m)})
        for v in namespace.values()
        if isinstance(v, type) and v.__module__ == name
    }
    return functions, classes


def install(shell=None) -> None:
    """Start guarding this kernel (called once, from the IPython startup file)."""
    shell = shell or builtins.get_ipython()  # type: ignore[attr-defined]  # IPython puts it there
    guard = _Guard(shell)
    shell.events.register("post_run_cell", guard.restore)
    if os.environ.get("PEFT_COURSE_NUMERICS"):  # rehearsing another machine's numerics (peft_grader.numerics)
        from peft_grader.numerics import apply

        apply()
    guard.restore()
    sys.addaudithook(_audit)
