"""Inside a grading kernel: the grader's guard. Installed by an IPython start-up file that the sandbox writes
(`peft_grader.sandbox`), so it runs before the first learner cell. Standard library only at import.

The static review (`peft_grader.tamper`) comments out what can only be tampering; this is the layer that
runs. It does four things (grader/README.md, threat model):

1. **After every cell** (IPython's post_run_cell, the guard's callback first), it undoes what the cell did to
   the grading environment: the `checks` package is dropped from `sys.modules` (each hidden test imports it
   afresh from the grader's read-only folder, put back first on `sys.path`); the import system's hooks,
   the builtins, the names hidden tests use (`globals`, `__import__`), the libraries the checks read (torch,
   peft, transformers, bitsandbytes, safetensors, json, ...) and the way outputs leave the kernel are
   restored; every IPython event callback and input or AST transformer that learner code added, of any type
   (a function, a `functools.partial`, an object with `__call__`), is removed, and so are exception handlers,
   the interpreter's hooks (`sys.excepthook`, traces, profiles) and the registries that call learner code at a
   moment it does not choose (torch's global module hooks, its function and dispatch mode stacks, default
   saved-tensor hooks, `gc.callbacks`). Automatic garbage collection is paused while a hidden test runs, so no
   `__del__` or `weakref.finalize` of the learner's fires inside it.
2. **A clean room** before every hidden test cell and every locked cell that records provenance: the trusted
   executor asks for it out of band (a message of its own on the kernel's shell channel, which no input
   transformer and no event callback sees), and the guard returns every extension point to its own snapshot
   wholesale, whatever learner code did since.
3. **Provenance**: after a locked cell that does the work (trains, measures), the executor asks, in the
   clean room, for a record of what did it (the trained model's manifest, the measured losses); the reply
   goes into the notebook's metadata, which only the trusted process writes, and the checks read it here.
4. **Capabilities no exercise needs are reported**: its audit hook, installed before any learner code, sees
   learner code build code from strings, read frames, walk the garbage collector, use ctypes, install traces,
   profiles or audit hooks, and the post-cell pass sees modules written at run time and imported, IPython's
   hook APIs and threads left running. Each use is published at once, as an output of the running cell the
   grader takes out of the notebook, with where it happened; the submission is then held for an
   instructor's review. What can only be tampering (replacing a function's code, a trace, a profile, an audit
   hook, ctypes, the garbage collector's object lists) is refused as well, with `TamperingBlocked`.

Honest code is left alone: library code reads frames (logging, warnings, traceback) and compiles code
(namedtuple, IPython's magics) all the time, so only what learner code does itself counts, and IPython's own
magics (`%%time`, `%timeit`, `%prun`) and installed extensions (`%load_ext autoreload`) are the library's.
"""

from __future__ import annotations

import builtins
import functools
import gc
import hashlib
import json
import operator
import os
import sys
import threading
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
LIBRARY_ROOTS = {lib.split(".")[0] for lib in LIBRARIES}
# What no lab needs and only tampering does: refused (and held for review) when learner code does it.
REFUSED = {
    "object.__setattr__": "replaces a function's code or defaults",
    "function.__new__": "builds a function from a code object",
    "sys.settrace": "installs a trace function",
    "sys.setprofile": "installs a profile function",
    "sys.addaudithook": "installs an audit hook",
    "gc.get_objects": "lists the garbage collector's objects",
    "gc.get_referrers": "looks up the referrers of an object",
    "gc.get_referents": "looks up the referents of an object",
}
# Capabilities reported for review (the event: what it means). Frame reads are the learner's own only.
REPORTED = {
    "compile": "builds code from a string",
    "exec": "runs code built from a string",
    "sys._getframe": "reads an interpreter frame",
    "sys._current_frames": "reads every thread's frames",
    "object.__getattr__": "reads an interpreter frame",
}
FRAME_ATTRIBUTES = {"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"}
# Which capability of the guide's list each refused or reported event is (what report.html groups by).
CAPABILITY = {
    **{why: "dynamic code" for why in ("builds code from a string", "runs code built from a string")},
    **{why: "frame introspection" for why in ("reads an interpreter frame", "reads every thread's frames")},
    **{
        why: "sys's hook APIs"
        for why in ("installs a trace function", "installs a profile function", "installs an audit hook")
    },
    **{
        why: "gc walks"
        for why in (
            "lists the garbage collector's objects",
            "looks up the referrers of an object",
            "looks up the referents of an object",
        )
    },
    "uses ctypes": "ctypes",
    "replaces a function's code or defaults": "code replaced",
    "builds a function from a code object": "code replaced",
}
# Library functions that only hand a frame to their caller: the frame read is their caller's.
FRAME_HANDLERS = {
    ("inspect", "currentframe"),
    ("inspect", "stack"),
    ("inspect", "trace"),
    ("inspect", "getouterframes"),
    ("inspect", "getinnerframes"),
    ("traceback", "walk_stack"),
    ("traceback", "walk_tb"),
}
PROTECTED_NAMES = ("globals", "__import__", "__build_class__")
KERNEL_BUILTINS = {"input", "raw_input"}  # ipykernel swaps them around every cell (stdin forwarding)
HOLD_MIME = "application/vnd.peft-course.hold+json"  # evidence for the grader, taken out of the notebook
REQUEST, REPLY = "peft_guard_request", "peft_guard_reply"  # the executor's out-of-band messages
RECORDED_KEY = "peft_course_recorded"  # a locked cell's metadata, where the executor keeps what was recorded
TRANSFORMER_NAMES = {
    "input_transformers_cleanup": "input transformer",
    "input_transformers_post": "input transformer",
    "ast_transformers": "AST transformer",
}
TRANSFORMERS = tuple(TRANSFORMER_NAMES)
SYS_HOOKS = ("excepthook", "displayhook", "breakpointhook", "unraisablehook")


class TamperingBlocked(RuntimeError):
    """Raised in a learner's cell that tried something no lab needs and only tampering does."""


FUNCTIONS = (types.FunctionType, types.MethodType, types.BuiltinFunctionType)
METHODS = (*FUNCTIONS, classmethod, staticmethod, property)

_guard: _Guard | None = None  # the installed guard: the checks ask it for what the locked cells recorded


def recorded(cell: str, name: str):
    """What the locked cell `cell` recorded under `name` in this kernel (plain data), or None: not grading, or
    that cell has not run. The checks judge a learner's measurements by it (checks.evidence)."""
    return None if _guard is None else _guard.records.get(cell, {}).get(name)


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


def _site_folders() -> list[str]:
    import site
    import sysconfig

    return [*site.getsitepackages(), sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]]


def _trusted(module: str | None) -> bool:
    """A module whose callbacks and transformers belong in a grading kernel (IPython's own, its extensions,
    ipykernel, matplotlib and its inline backend)."""
    return (module or "").split(".")[0] in ("IPython", "ipykernel", "matplotlib_inline", "matplotlib")


def _code_of(value):
    """The code object a callable runs, through partials, bound methods and objects with __call__."""
    for _ in range(8):
        if isinstance(value, types.FunctionType):
            return value.__code__
        if isinstance(value, types.MethodType):
            value = value.__func__
        elif isinstance(value, functools.partial):
            value = value.func
        elif isinstance(value, FUNCTIONS) or isinstance(value, type) or not callable(value):
            return None  # a builtin or a class: made by whoever put it there
        else:
            value = type(value).__call__
    return None


class _Guard:
    def __init__(self, shell) -> None:
        self.shell = shell
        # the grader's folder, from PYTHONPATH (grader/nbgrader_config.py puts it there), never the cwd
        roots = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        self.checks_root = next(
            (p for p in roots if any(os.path.isfile(f"{p}/checks/__init__.{ext}") for ext in ("py", "pyc"))),
            None,
        )
        self.folder = os.path.realpath(os.getcwd())  # the learner's folder: the submission and what it writes
        self.private = os.path.join(self.folder, ".sandbox")  # the kernel's caches and its start-up file
        # the interpreter's and the libraries' own folders, even where a learner's folder holds them (a venv)
        self.library_roots = tuple(
            os.path.realpath(p) + os.sep for p in {sys.prefix, sys.base_prefix, *_site_folders()} if p
        )
        self.files = self._python_files()  # modules the learner wrote by hand, as submitted
        self.grader_cells: set[str] = (
            set()
        )  # code names of the locked and test cells (the executor sends them)
        self.records: dict[str, dict] = {}
        self.reported: set[tuple] = set()
        self.pending: list[dict] = []  # evidence found outside a cell (in a clean room): sent in the reply
        self.watched: dict | None = None  # calls into learner code while a watched locked cell runs (watch())
        self.watch_files: dict[str, bool] = {}
        self.in_hook = False
        self.outside_cell = False
        self.seen_modules: set[str] = set(sys.modules)
        self.meta_path = list(sys.meta_path)
        self.path_hooks = list(sys.path_hooks)
        self.builtins = dict(vars(builtins))
        self.sys_hooks = {name: getattr(sys, name, None) for name in SYS_HOOKS}
        self.transformers = {name: list(getattr(shell, name, [])) for name in TRANSFORMERS}
        self.custom_exc = (shell.custom_exceptions, shell.CustomTB)
        self.shell_dict = dict(vars(shell))
        self.threads = set(threading.enumerate())
        self.signals = _signal_handlers()
        self.sealed: dict | None = (
            None  # the checks and libraries as a clean room left them (a hidden test's)
        )
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
        # The course's own setting of bitsandbytes, which every lab's quiet() makes: made here, so the snapshot
        # has it and the lab's call changes nothing (labutils.doctor.keep_4bit_layers_trainable).
        try:
            from labutils.doctor import keep_4bit_layers_trainable

            keep_4bit_layers_trainable()
        except Exception:  # noqa: BLE001 - without bitsandbytes there is nothing to set
            pass
        self.libraries: dict[str, tuple[dict, dict]] = {}
        # Registries that call whatever is in them at a moment the caller does not choose (a hidden test's
        # forward pass, a collection): torch's global module hooks, its mode stacks, autograd's default
        # saved-tensor hooks and the garbage collector's callbacks. As they are before any cell.
        self.torch_hooks = {name: dict(hooks) for name, hooks in _torch_global_hooks().items()}
        self.gc_callbacks = list(gc.callbacks)
        self.gc_paused = False  # the guard turned automatic collection off for a hidden test (seal)
        self._index: _LibraryIndex | None = None  # self.libraries as flat lists, for a quick comparison
        self.callbacks = {event: list(cbs) for event, cbs in shell.events.callbacks.items()}

    # ---- whose code is it ---------------------------------------------------------------------------------
    def learners(self, filename: str) -> bool:
        """Whether code from this file is the learner's: a notebook cell that is not one of the grader's
        (locked or test cells), or a file in the learner's folder (not the kernel's private one)."""
        if filename in self.grader_cells:
            return False
        if filename in getattr(self.shell.compile, "_filename_map", {}) or filename.startswith(
            "<ipython-input"
        ):
            return True
        path = os.path.realpath(filename) if filename.startswith("/") else ""
        return (
            bool(path)
            and path.startswith(self.folder + os.sep)
            and not path.startswith((self.private + os.sep, *self.library_roots))
        )

    def made_by_learner(self, value) -> bool:
        """An extension point's callable that learner code made. The library's are IPython's and ipykernel's
        own, their extensions' (%load_ext autoreload) and matplotlib's inline backend: functions, their bound
        methods and objects of their classes, whose code is no learner's. Anything else is the learner's: a
        function of a cell or of the learner's folder, a `functools.partial` (of anything), a builtin, an
        object of a class the learner wrote, a library method bound to the learner's object."""
        if value is None or isinstance(value, int):  # a signal's SIG_DFL, SIG_IGN (or no handler)
            return False
        if isinstance(value, functools.partial) or isinstance(value, type):
            return True
        if isinstance(value, types.BuiltinFunctionType):  # the interpreter's own (signal.default_int_handler)
            return (getattr(value, "__module__", "") or "") not in ("_signal", "signal", "builtins", "sys")
        if isinstance(value, types.MethodType):
            return self.made_by_learner(value.__func__) or not _trusted(type(value.__self__).__module__)
        if isinstance(value, types.FunctionType):
            return not _trusted(value.__module__) or self.learners(value.__code__.co_filename)
        code = _code_of(value)
        return not _trusted(type(value).__module__) or code is None or self.learners(code.co_filename)

    def learner_code(self, value) -> bool:
        """Whether a value put in a library's place is the learner's doing: code of a cell or of the learner's
        folder (through methods, partials, properties and objects with __call__), or a partial or a builtin
        put there; a library's own function (torch wrapping an optimizer's step) is not."""
        if isinstance(value, (classmethod, staticmethod)):
            value = value.__func__
        if isinstance(value, property):
            value = value.fget
        if isinstance(value, functools.partial):
            return True
        code = _code_of(value)
        if code is not None:
            return self.learners(code.co_filename)
        if isinstance(value, type):
            return value.__module__ == "__main__"
        return isinstance(value, types.BuiltinFunctionType)

    def where(self, code, line: int) -> dict:
        """Where learner code is: the execution count of its cell (the executor maps it to the cell) and the
        line, or its file and line."""
        count = getattr(self.shell.compile, "_filename_map", {}).get(code.co_filename)
        if count is not None:
            return {"execution_count": count, "line": line}
        return {"file": os.path.relpath(code.co_filename, self.folder), "line": line}

    def _where_made(self, value) -> dict:
        """Where learner code defined a callable (its cell and line), else the cell now running."""
        code = _code_of(value)
        if code is not None and self.learners(code.co_filename):
            return self.where(code, code.co_firstlineno)
        return self.current_cell()

    def current_cell(self) -> dict:
        """The cell now running: the executor knows it, by the cell whose outputs the evidence arrives in."""
        return {"this_cell": True}

    # ---- evidence -------------------------------------------------------------------------------------------
    def report(self, capability: str, detail: str, where: dict) -> None:
        """Publish one use of a capability as an output of the running cell (the executor takes it out of the
        notebook into the submission's review record), once per capability and place."""
        key = (capability, detail, tuple(sorted(where.items())))
        if key in self.reported:
            return
        self.reported.add(key)
        evidence = {"capability": capability, "detail": detail, **where}
        if self.outside_cell:  # a clean room: the evidence goes into the reply to the executor
            self.pending.append(evidence)
            return
        self.outputs["publisher"].publish(
            data={HOLD_MIME: evidence, "text/plain": f"[held for review: {detail}]"}, metadata={}
        )

    def audit(self, event: str, args: tuple) -> None:
        refused = event in REFUSED or event.startswith("ctypes.")
        if self.in_hook or not (refused or event in REPORTED):
            return
        self.in_hook = True  # the guard's own frame reads and outputs are not audited
        caller, why = None, ""
        try:  # nothing may escape but a deliberate refusal: a hook that raises breaks C code (pybind11 aborts)
            if event == "object.__getattr__" and (len(args) < 2 or args[1] not in FRAME_ATTRIBUTES):
                return
            if event == "object.__setattr__" and args and isinstance(args[0], type):
                if getattr(args[0], "__module__", None) == "__main__":
                    return  # a class the learner defined in the notebook
            caller = self._learner_caller(
                any_frame=event in ("sys.settrace", "sys.setprofile", "sys.addaudithook"),
                frames=event in ("sys._getframe", "object.__getattr__"),
            )
            why = REFUSED.get(event, "uses ctypes") if refused else REPORTED[event]
            if caller is not None:
                self.report(CAPABILITY.get(why, why), why, self.where(caller.f_code, caller.f_lineno))
        except Exception:  # noqa: BLE001 - see above
            caller = None
        finally:
            self.in_hook = False
        if caller is None or not refused:
            return
        if event == "sys.addaudithook":
            raise RuntimeError(f"blocked by the grader: this cell {why}")  # CPython then refuses the hook
        raise TamperingBlocked(f"blocked by the grader: this cell {why} ({event})")

    def _learner_caller(self, any_frame: bool = False, frames: bool = False):
        """The learner frame that caused an audited event: the first Python frame outside this module (the one
        a frame-handing library function returns to, for frame reads), or any learner frame on the stack
        where `any_frame` (a trace installed by the standard library on learner code's behalf), unless
        IPython's own magics stand between them."""
        frame = sys._getframe(1)  # the audit machinery is C: Python frames only, from this method up
        while frame is not None and frame.f_code.co_filename == __file__:
            frame = frame.f_back
        if frame is None:
            return None
        if frames and (frame.f_globals.get("__name__"), frame.f_code.co_name) in FRAME_HANDLERS:
            frame = frame.f_back
        if not any_frame:
            return frame if frame is not None and self.learners(frame.f_code.co_filename) else None
        while frame is not None:
            if "/IPython/core/magics/" in frame.f_code.co_filename:
                return None  # %prun, %%time: IPython's own tools
            if self.learners(frame.f_code.co_filename):
                return frame
            frame = frame.f_back
        return None

    # ---- after every cell -------------------------------------------------------------------------------
    def restore(self, *_args) -> None:
        # the hidden test that just ran: did anything change what it used? (libraries as indexed: the check
        # below has just been made, and nothing between here and there touches a library)
        as_indexed = self.sealed is not None and self._verify_sealed()
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
        self._restore_extension_points()
        shell_dict = vars(self.shell)
        _drop_instance_methods(self.shell, self.shell_dict)  # showtraceback, ... put on the shell
        for name, value in self.shell_dict.items():
            if isinstance(value, FUNCTIONS) and shell_dict.get(name) is not value:
                shell_dict[name] = value
        self._restore_outputs()
        if not as_indexed:
            self._restore_libraries()
        self._learner_modules()

    def _restore_extension_points(self) -> None:
        """IPython's callbacks and transformers, exception handlers and the interpreter's hooks: learner-made
        ones go (and are reported), whatever their type; the library's stay."""
        events = self.shell.events.callbacks
        for event, callbacks in events.items():
            mine = [
                cb for cb in callbacks if cb not in self.callbacks.get(event, []) and self.made_by_learner(cb)
            ]
            for cb in mine:
                name = getattr(_code_of(cb), "co_name", type(cb).__name__)
                self.report(
                    "IPython's hook APIs",
                    f"registers an IPython {event} callback ({name})",
                    self._where_made(cb),
                )
            callbacks[:] = [cb for cb in callbacks if cb not in mine]
        if self.restore not in events["post_run_cell"]:
            events["post_run_cell"].insert(0, self.restore)
        for name, saved in self.transformers.items():
            current = getattr(self.shell, name)
            if any(t not in saved and self.made_by_learner(t) for t in current):
                self.report(
                    "IPython's hook APIs",
                    f"adds an IPython {TRANSFORMER_NAMES[name]}",
                    self.current_cell(),
                )
            current[:] = [t for t in current if t in saved or not self.made_by_learner(t)]
        if (self.shell.custom_exceptions, self.shell.CustomTB) != self.custom_exc:
            self.report("IPython's hook APIs", "sets a custom exception handler", self.current_cell())
            self.shell.custom_exceptions, self.shell.CustomTB = self.custom_exc
        for name, value in self.sys_hooks.items():
            current = getattr(sys, name, None)
            if current is value:
                continue
            if self.made_by_learner(current) and current is not getattr(sys, f"__{name}__", None):
                self.report("sys's hook APIs", f"replaces sys.{name}", self._where_made(current))
                setattr(sys, name, value)
            else:  # IPython's own (%%capture's, ipykernel's): the environment now
                self.sys_hooks[name] = current
        if (
            sys.gettrace() is not None and sys.gettrace() != self._watch_calls
        ) or sys.getprofile() is not None:
            self.report(
                "sys's hook APIs", "leaves a trace or profile function installed", self.current_cell()
            )
            sys.settrace(None)
            sys.setprofile(None)
        if getattr(threading, "_trace_hook", None) or getattr(threading, "_profile_hook", None):
            self.report(
                "sys's hook APIs", "installs a trace or profile function for new threads", self.current_cell()
            )
            threading.settrace(None)
            threading.setprofile(None)
        self._restore_signals()
        self._restore_registries()
        monitoring = getattr(sys, "monitoring", None)  # Python 3.12 and later
        if monitoring is not None:
            for tool in range(6):
                if monitoring.get_tool(tool) is not None and tool not in getattr(self, "tools", ()):
                    self.report("sys's hook APIs", "registers a sys.monitoring tool", self.current_cell())
                    monitoring.free_tool_id(tool)

    def _restore_signals(self) -> None:
        """Signal handlers and interval timers: learner code run by a signal fires anywhere, a check included."""
        import signal

        for number, saved in self.signals.items():
            current = signal.getsignal(number)
            if current is not saved and self.made_by_learner(current):
                self.report(
                    "sys's hook APIs", f"installs a handler for signal {number}", self._where_made(current)
                )
                signal.signal(number, saved)
        for timer in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF):
            if signal.getitimer(timer) != (0.0, 0.0):
                self.report("sys's hook APIs", "starts an interval timer", self.current_cell())
                signal.setitimer(timer, 0)
        if signal.alarm(0):
            self.report("sys's hook APIs", "sets an alarm", self.current_cell())

    def _restore_registries(self) -> None:
        """Learner code left where a library calls it later, inside a hidden test as well: a global module hook
        (every model's forward, the checks' own included), a torch function or dispatch mode, default
        saved-tensor hooks, a garbage-collector callback. Removed and reported where the code is the learner's (a
        cell's or a file of theirs, a partial, a builtin put there); the libraries' own stay."""
        for name, hooks in _torch_global_hooks().items():
            saved = self.torch_hooks.get(name, {})
            for key, hook in list(hooks.items()):
                if saved.get(key, _MISSING) is hook or not callable(hook) or not self.learner_code(hook):
                    continue
                self.report(
                    "torch's hook APIs",
                    f"registers a torch global module hook ({name})",
                    self._where_made(hook),
                )
                for companion in _torch_global_hooks().values():  # the hook's flags, under the same handle id
                    companion.pop(key, None)
        # torch was imported at start (LIBRARIES); without it there is nothing to reset
        torch = sys.modules.get("torch")
        for kind, depth, at, pop, push in _torch_mode_stacks(torch) if torch else ():
            modes = [at(i) for i in range(depth())]
            mine = [m for m in modes if _learner_class(type(m), self)]
            if mine:
                self.report(
                    "torch's hook APIs",
                    f"leaves a torch {kind} mode active ({type(mine[0]).__name__})",
                    self.current_cell(),
                )
                for _ in modes:
                    pop()
                for mode in modes:
                    if mode not in mine:
                        push(mode)
        autograd = torch._C._autograd if torch else None
        while (
            autograd
            and (hooks := autograd._top_saved_tensors_default_hooks(True)) is not None
            and any(self.learner_code(hook) for hook in hooks)
        ):
            self.report(
                "torch's hook APIs", "leaves default saved-tensor hooks installed", self._where_made(hooks[0])
            )
            autograd._pop_saved_tensors_default_hooks()
        mine = [cb for cb in gc.callbacks if cb not in self.gc_callbacks and self.learner_code(cb)]
        for cb in mine:
            self.report("sys's hook APIs", "registers a garbage-collector callback", self._where_made(cb))
            gc.callbacks.remove(cb)
        if self.gc_paused:  # a hidden test has ended: collection as the learner left it
            self.gc_paused = False
            gc.enable()

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
        if self._libraries_as_indexed():  # the common case: nothing to restore
            return
        for name, module in list(sys.modules.items()):
            if module is None or not _is_library(name):
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
        self._index = _LibraryIndex.of(self.libraries)

    def _libraries_as_indexed(self) -> bool:
        """Whether the libraries are as the snapshot has them (the index's quick comparison); modules loaded
        since the last look are snapshotted as they are now, their pristine state, as the full restore would."""
        index = self._index
        if index is None:
            return False
        loaded = index.loaded(self.libraries)
        if loaded is None or not index.untouched():
            return False
        for name in loaded:
            self.libraries[name] = _snapshot(name, sys.modules[name])
            if not index.add(name, sys.modules[name], self.libraries[name]):
                self._index = None
        return True

    def _python_files(self) -> dict[str, str]:
        """sha256 of every Python file in the learner's folder (not the kernel's private one)."""
        found = {}
        for root, dirs, files in os.walk(self.folder):
            dirs[:] = [d for d in dirs if os.path.join(root, d) != self.private]
            for name in files:
                if name.endswith((".py", ".pyc", ".pth", ".so")):
                    path = os.path.join(root, name)
                    try:
                        with open(path, "rb") as f:
                            found[path] = hashlib.sha256(f.read()).hexdigest()
                    except OSError:
                        continue
        return found

    def _learner_modules(self) -> None:
        """Modules imported from the learner's folder that were not there, as they are, when grading began:
        code written while the notebook ran, which no review has read."""
        for name, module in list(sys.modules.items()):
            if name in self.seen_modules:
                continue
            self.seen_modules.add(name)
            path = getattr(
                module, "__file__", None
            )  # absolute for a module loaded from a file (torch.ops: "_ops.py")
            path = os.path.realpath(path) if isinstance(path, str) and os.path.isabs(path) else ""
            if not path.startswith(self.folder + os.sep) or path.startswith(self.private + os.sep):
                continue
            try:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            except OSError:
                digest = ""
            if self.files.get(path) != digest:
                where = self.current_cell() | {"sha256": digest}
                self.report(
                    "modules written at run time",
                    f"imports {os.path.relpath(path, self.folder)}, written while the notebook ran",
                    where,
                )

    # ---- the executor's out-of-band requests --------------------------------------------------------------
    def clean_room(self) -> None:
        """Every extension point back to the guard's snapshot, before a hidden test or a recording cell."""
        self.restore()
        events = self.shell.events.callbacks
        for event, callbacks in events.items():  # nothing learner-made survives, even what restore() kept
            callbacks[:] = [
                cb for cb in callbacks if cb in self.callbacks.get(event, []) or not self.made_by_learner(cb)
            ]
        for thread in threading.enumerate():
            if thread in self.threads or not thread.is_alive():
                continue
            code = _code_of(getattr(thread, "_target", None) or thread.run)
            if code is not None and self.learners(code.co_filename):
                self.threads.add(thread)
                self.report(
                    "threads left running",
                    f"leaves a thread running ({thread.name}) when a hidden check starts",
                    self.where(code, code.co_firstlineno),
                )

    def seal(self, lab: str) -> None:
        """Import the lab's checks now, in the clean room, and note them and the libraries as they are: the
        hidden test that follows imports these very modules, and whatever changes them while it runs voids
        its verdict (`_verify_sealed`)."""
        import importlib

        importlib.import_module(f"checks.lab{lab}.kernel")
        self._restore_libraries()
        # Objects the learner made may run code when collected (__del__, weakref.finalize): not inside the test.
        if gc.isenabled():
            gc.disable()
            self.gc_paused = True
        self.sealed = {
            name: dict(vars(module))
            for name, module in list(sys.modules.items())
            if module is not None and (name == "checks" or name.startswith("checks."))
        }

    def _verify_sealed(self) -> bool:
        """After a hidden test: a function of the checks rebound, or a library's function, class method or
        builtin replaced while it ran (by learner code the check called, or a signal, or a thread) voids it.
        True where the libraries were found as the snapshot has them."""
        as_indexed = self._libraries_as_indexed()
        changed = [
            f"{name}.{key}"
            for name, saved in self.sealed.items()
            for key, value in vars(sys.modules.get(name, types.ModuleType(name))).items()
            if key not in ("__builtins__",) and saved.get(key, value) is not value
        ]
        changed += [
            f"builtins.{k}"
            for k, v in self.builtins.items()
            if k not in KERNEL_BUILTINS and vars(builtins).get(k) is not v
        ]
        if not as_indexed:
            changed += self._library_differences(made_by_learner=True)
        self.sealed = None
        if changed:
            self.report(
                "code replaced",
                f"changed {', '.join(sorted(changed)[:3])} while a hidden test ran: its verdict is void",
                self.current_cell() | {"void": True},
            )
        return as_indexed

    def _changed_libraries(self, made_by_learner: bool = False) -> list[str]:
        """The libraries' functions and class members that differ from their snapshot (nothing restored);
        `made_by_learner`: only those replaced by something learner code made (a library wraps its own: torch
        patches an optimizer's step the first time one is built)."""
        return [] if self._libraries_as_indexed() else self._library_differences(made_by_learner)

    def _library_differences(self, made_by_learner: bool) -> list[str]:
        """`_changed_libraries` without the quick comparison: for a caller that has just made it."""
        changed = []
        for name, (functions, classes) in self.libraries.items():
            module = sys.modules.get(name)
            if module is None:
                continue
            namespace = vars(module)
            for key, value in functions.items():
                now = namespace.get(key)
                if now is not value and (not made_by_learner or self.learner_code(now)):
                    changed.append(f"{name}.{key}")
            for cls, (_size, members) in classes.items():
                current = vars(cls)
                for key, value in members.items():
                    now = current.get(key)
                    if now is not value and (not made_by_learner or self.learner_code(now)):
                        changed.append(f"{name}.{cls.__name__}.{key}")
        return changed

    def record(self, cell: str, wanted: dict) -> dict:
        """What the locked cell `cell` did the work with, as plain data: {name: [expression, kind]} (a name in the
        notebook, or an attribute of one), each recorded by the checks' recorder of that kind."""
        from checks.evidence import RECORDERS  # the checks' bytecode, first on the path

        found = {}
        for name, (expression, kind) in wanted.items():
            try:
                head, *attributes = expression.split(".")
                value = self.shell.user_ns[head]
                for attribute in attributes:
                    value = object.__getattribute__(value, attribute)
                found[name] = RECORDERS[kind](value)
            except Exception as err:  # noqa: BLE001 - what could not be recorded is recorded as such
                found[name] = {"unrecorded": f"{type(err).__name__}: {err}"[:300]}
        # what the cell started from (RECORDS_BEFORE), then what it did (RECORDS)
        self.records.setdefault(cell, {}).update(found)
        return found

    def watch(self) -> None:
        """From now until the next record: note each call into the learner's code (a cell that is not the grader's, a
        file of their folder) in this thread, the one cells run in. A locked cell that does the work (a Trainer's
        training) calls only libraries; learner code it calls (a collator's method, a hook, even one that removes
        itself afterwards) is held for review. A trace that does nothing else costs no measurable time."""
        self.watched = {}
        sys.settrace(self._watch_calls)

    def _watch_calls(self, frame, event, arg):
        if event == "call" and self.watched is not None and len(self.watched) < 20:
            code = frame.f_code
            learners = self.watch_files.get(code.co_filename)
            if learners is None:  # the private folder too: its temporary files are the learner's to write
                path = os.path.realpath(code.co_filename) if code.co_filename.startswith("/") else ""
                learners = self.watch_files[code.co_filename] = self.learners(code.co_filename) or (
                    bool(path) and path.startswith(self.private + os.sep)
                )
            if learners:
                self.watched.setdefault(
                    (code.co_filename, code.co_firstlineno),
                    {
                        "capability": "learner code inside a locked cell's work",
                        "detail": f"{code.co_name}() runs inside a locked cell that trains or measures",
                        **self.where(code, code.co_firstlineno),
                    },
                )
        return None  # no line events: calls only

    def stop_watching(self) -> list[dict]:
        """What watch() saw, and the trace removed."""
        if sys.gettrace() == self._watch_calls:
            sys.settrace(None)
        found, self.watched = list((self.watched or {}).values()), None
        return found

    def handle(self, stream, idents, msg) -> None:
        """The executor's request: configure, a clean room (and a watch), the watch's end, or a record (each
        answered with a reply)."""
        content, reply = msg["content"], {"status": "ok"}
        self.in_hook = self.outside_cell = True
        try:
            if content.get("configure"):
                compiler = self.shell.compile
                self.grader_cells = {compiler.get_code_name(src, src, 0) for src in content["configure"]}
            if content.get("clean_room"):
                self.clean_room()
                if content.get("lab"):
                    self.seal(content["lab"])
                if content.get("watch"):
                    self.watch()
            if content.get("unwatch") or content.get("record"):
                self.pending += self.stop_watching()
            if content.get("record"):
                self.clean_room()
                before = self._changed_libraries(made_by_learner=True)
                reply["records"] = self.record(content["record"]["cell"], content["record"]["names"])
                if self._changed_libraries(made_by_learner=True) != before:  # the recording changed a library
                    reply["records"] = {
                        name: {"unrecorded": "a library changed while it was recorded"}
                        for name in reply["records"]
                    }
        except Exception as err:  # noqa: BLE001 - the executor reports it; grading goes on
            reply = {"status": "error", "error": f"{type(err).__name__}: {err}"[:500]}
        finally:
            self.in_hook = self.outside_cell = False
        reply["held"], self.pending = self.pending, []
        self.shell.kernel.session.send(
            stream, REPLY, json.loads(json.dumps(reply, default=str)), parent=msg, ident=idents
        )


class _LibraryIndex:
    """The guard's snapshot of the libraries (`_Guard.libraries`) as flat lists of (namespace, name, saved
    value), so that "has anything changed?" is answered by `map` in C, some 100,000 functions and methods in
    about 10 ms where the full restore's loop takes 25. Grading asks it several times per hidden test (the
    clean room, the seal, the verification after it), and nearly always the answer is no."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.modules: list = []
        self.spaces: list[dict] = []
        self.keys: list[str] = []
        self.values: list = []
        self.classes: list = []  # each class's members, read through its mappingproxy
        self.sizes: list[int] = []
        self.class_spaces: list = []
        self.class_keys: list[str] = []
        self.class_values: list = []
        self.module_names = set(sys.modules)  # every module the last look saw, library or not

    @classmethod
    def of(cls, libraries: dict) -> _LibraryIndex | None:
        index = cls()
        for name, saved in libraries.items():
            module = sys.modules.get(name)
            if module is not None and not index.add(name, module, saved):
                return None
        return index

    def add(self, name: str, module, saved: tuple[dict, dict]) -> bool:
        """Index one module's snapshot; False where its namespace is not a plain dict (then no index)."""
        namespace = vars(module)
        if type(namespace) is not dict:
            return False
        functions, classes = saved
        self.names.append(name)
        self.modules.append(module)
        self.spaces += [namespace] * len(functions)
        self.keys += functions.keys()
        self.values += functions.values()
        for owner, (size, members) in classes.items():
            proxy = vars(owner)
            self.classes.append(proxy)
            self.sizes.append(len(proxy))
            if len(proxy) != size:  # members added since the snapshot: the full restore looks at them too
                members = {**members, **{k: v for k, v in proxy.items() if k not in members}}
            self.class_spaces += [proxy] * len(members)
            self.class_keys += members.keys()
            self.class_values += members.values()
        self.module_names.add(name)
        return True

    def loaded(self, libraries: dict) -> list[str] | None:
        """The library modules loaded since the last look and never snapshotted; None where one that was
        snapshotted before is back (removed from sys.modules and loaded again: the full restore's case)."""
        new = sys.modules.keys() - self.module_names
        found = [name for name in new if _is_library(name) and sys.modules.get(name) is not None]
        if any(name in libraries for name in found):
            return None
        self.module_names.update(name for name in new if not _is_library(name))
        return found

    def untouched(self) -> bool:
        """Every indexed module still in sys.modules, and every function, class member and class size as
        indexed (identity, never `==`, which a learner's object could answer)."""
        is_ = operator.is_
        return (
            all(map(is_, map(sys.modules.get, self.names), self.modules))
            and all(map(is_, map(dict.get, self.spaces, self.keys), self.values))
            and all(
                map(
                    is_,
                    map(types.MappingProxyType.get, self.class_spaces, self.class_keys),
                    self.class_values,
                )
            )
            and list(map(len, self.classes)) == self.sizes
        )


def _is_library(name: str) -> bool:
    """A module of one of the libraries the checks read (LIBRARIES), or of their packages."""
    return name.split(".")[0] in LIBRARY_ROOTS and any(
        name == lib or name.startswith(lib + ".") for lib in LIBRARIES
    )


_MISSING = object()


def _torch_global_hooks() -> dict:
    """torch's global module hooks and their flags (`register_module_forward_hook` and its kin): the dicts of
    `torch.nn.modules.module` named `_global_*`, by name."""
    module = sys.modules.get("torch.nn.modules.module")
    return (
        {k: v for k, v in vars(module).items() if k.startswith("_global_") and isinstance(v, dict)}
        if module
        else {}
    )


def _torch_mode_stacks(torch) -> list:
    """torch's two mode stacks (a mode's `__torch_function__` or `__torch_dispatch__` runs for every operation
    while it is on one): (kind, depth, at, pop, push)."""
    from torch.utils import _python_dispatch

    c = torch._C
    return [
        (
            "function",
            c._len_torch_function_stack,
            c._get_function_stack_at,
            c._pop_torch_function_stack,
            c._push_on_torch_function_stack,
        ),
        (
            "dispatch",
            c._len_torch_dispatch_stack,
            c._get_dispatch_stack_at,
            _python_dispatch._pop_mode,
            _python_dispatch._push_mode,
        ),
    ]


def _learner_class(cls: type, guard: _Guard) -> bool:
    """A class the learner wrote (in a cell or a file of theirs), or one that inherits from such a class."""
    for klass in cls.__mro__:
        if klass.__module__ == "__main__":
            return True
        for value in vars(klass).values():
            code = _code_of(value) if callable(value) else None
            if code is not None and guard.learners(code.co_filename):
                return True
    return False


def _signal_handlers() -> dict:
    """The handler of every signal but SIGINT (ipykernel's own, set around each cell) that can have one."""
    import signal

    found = {}
    for number in signal.valid_signals():
        if number in (signal.SIGINT, signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            found[number] = signal.getsignal(number)
        except (OSError, ValueError):
            continue
    return found


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
    """Start guarding this kernel (called once, from the IPython start-up file)."""
    global _guard
    shell = shell or builtins.get_ipython()  # type: ignore[attr-defined]  # IPython puts it there
    if os.environ.get("PEFT_COURSE_NUMERICS"):  # rehearsing another machine's numerics (peft_grader.numerics)
        from peft_grader.numerics import apply

        apply()
    guard = _Guard(shell)
    shell.events.callbacks["post_run_cell"].insert(0, guard.restore)
    guard.callbacks = {event: list(cbs) for event, cbs in shell.events.callbacks.items()}
    kernel = getattr(shell, "kernel", None)
    if kernel is not None:
        kernel.shell_handlers[REQUEST] = guard.handle
    monitoring = getattr(sys, "monitoring", None)
    guard.tools = {t for t in range(6) if monitoring is not None and monitoring.get_tool(t) is not None}
    guard.restore()
    _guard = guard
    sys.addaudithook(guard.audit)
