"""The nbgrader side of the grading sandbox: nbgrader's Execute, with each kernel started in the sandbox
(`peft_grader.sandbox`), cells that kill their kernel or ignore interrupts costing that cell only, and a
wall budget for the whole notebook.

grader/nbgrader_config.py puts it in place of Execute, so a plain `nbgrader autograde` in any course folder
that loads that config runs kernels in the sandbox too; `labutils grade` only sets its folders and budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient.exceptions import DeadKernelError
from nbclient.util import run_sync
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import Execute
from traitlets import Bool, Float, Int, List, Unicode

from peft_grader import kernel_guard
from peft_grader.as_made import FilesAsMade
from peft_grader.nbcourse import GRADER, SOURCE, checks_data, lab_registry, outside_targets
from peft_grader.preprocessors import REVIEW_KEY, declared_timeouts, master_of
from peft_grader.sandbox import (
    DEFAULT_MEMORY_MB,
    INTERRUPT_GRACE_S,
    kernel_folder,
    kernels_folder,
    write_kernelspec,
)


def compile_checks(folder: Path) -> Path:
    """grader/checks as a package of .pyc files without their source, under folder/checks.

    Sandboxed kernels import the checks from here and cannot see grader/checks, so no cell can print
    the checks' source into its output (and so into the feedback), and no traceback can quote it.
    """
    import py_compile

    checks = GRADER / "checks"
    for source in sorted(checks.rglob("*.py")):  # the shared core and every lab's folder
        compiled = Path(folder) / "checks" / source.relative_to(checks).with_suffix(".pyc")
        compiled.parent.mkdir(parents=True, exist_ok=True)
        py_compile.compile(str(source), cfile=str(compiled), doraise=True)
    return Path(folder)


@contextlib.contextmanager
def _prepended(**paths: str):
    """Environment variables with a folder put first, for the kernel this process starts; restored after."""
    saved = {name: os.environ.get(name) for name in paths}
    for name, first in paths.items():
        os.environ[name] = os.pathsep.join(p for p in (first, saved[name]) if p)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _kernel_files() -> list[Path]:
    """Where other kernels' connection files and sockets are: every grading kernel's folder, and Jupyter's
    runtime folder (the instructor's own JupyterLab kernels). Hidden from every sandboxed kernel: with a key
    and a socket, a submission could run code in another kernel, outside its sandbox."""
    from jupyter_core.paths import jupyter_runtime_dir

    return [p for p in (kernels_folder(), Path(jupyter_runtime_dir())) if p.is_dir()]


GUARD_TIMEOUT_S = 60  # the guard answers between cells, when the kernel is idle: seconds are plenty


def _graders(cell) -> bool:
    """A cell whose code is the grader's: locked, or a test cell (nbgrader restored both from the master)."""
    meta = cell.metadata.get("nbgrader", {})
    return cell.cell_type == "code" and (
        meta.get("locked") or (meta.get("grade") and not meta.get("solution"))
    )


def _hidden_test(cell) -> bool:
    meta = cell.metadata.get("nbgrader", {})
    return (
        cell.cell_type == "code"
        and meta.get("grade")
        and not meta.get("solution")
        and "BEGIN HIDDEN TESTS" in cell.source
    )


def _stderr_to_stdout(cell) -> None:
    """A test cell's verdict is its check's: what libraries print to stderr while it runs (logging at INFO,
    warnings) moves to stdout, where nbgrader does not read it as a failure."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            output["name"] = "stdout"


def _writefile_body(source: str) -> str:
    """The file a `%%writefile PATH` cell writes (its body), or '' for any other cell (or one that appends)."""
    first, _, body = source.partition("\n")
    words = first.split()
    if words[:1] != ["%%writefile"] or "-a" in words or "--append" in words or not body:
        return ""
    return body if body.endswith("\n") else body + "\n"  # IPython ends every cell it runs with a newline


def _digest_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


class SandboxExecute(Execute):
    """nbgrader's Execute, plus: a cell that kills its kernel, or a loop that ignores interrupts,
    costs that cell only.

    With plain nbgrader a kernel that dies (sys.exit, os._exit, a segfault, the memory limit) or
    ignores the timeout's interrupt stops the whole notebook, and the student gets no grade at all.
    Here the kernel is restarted, the cell records why, later cells run without the lost state, and
    the grade reflects the work that ran.
    """

    raise_on_iopub_timeout = False
    budget = Float(
        0, help="Wall-clock seconds for the whole notebook; later cells are not run (0: none)."
    ).tag(config=True)
    isolate = Bool(
        True, help="Start the kernel in the grading sandbox: limits, no network, the grader's folders hidden."
    ).tag(config=True)
    hidden = List(
        Unicode(),
        help="Folders the kernel cannot see (default: the course's submitted, autograded and feedback folders, "
        "the masters, the checks and the catalogues).",
    ).tag(config=True)
    readable = List(Unicode(), help="Folders inside a hidden one that the kernel may still read.").tag(
        config=True
    )
    checks = Unicode(
        "", help="A folder holding the checks package as bytecode (compile_checks); default: compiled now."
    ).tag(config=True)
    memory_mb = Int(DEFAULT_MEMORY_MB, help="Address space of the kernel, in MiB.").tag(config=True)
    warm = Unicode(
        "",
        help="Address of a warm-kernel zygote (peft_grader.warm): kernels are forked from it, with the libraries "
        "already imported, in namespaces of their own; empty: a cold kernel under bubblewrap.",
    ).tag(config=True)
    as_made = Unicode(
        "",
        help="A folder the kernel cannot see, for the lab's files as each check saw them (peft_grader.as_made); "
        "default: as_made/STUDENT/LAB in the course folder.",
    ).tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        self._started = time.monotonic()
        nbgrader = (resources or {}).get("nbgrader", {})
        graded = {"assignment", "notebook"} <= set(nbgrader)
        self._declared = declared_timeouts(master_of(self, resources)) if graded else {}
        self._start_guarding(nb, resources or {}, nbgrader.get("assignment") if graded else None)
        try:
            return self._execute(nb, resources, km)
        finally:
            self._finish_guarding(nb)

    def _execute(self, nb, resources, km):
        if not self.isolate:
            return super().preprocess(nb, resources, km)
        # The kernel's connection file and sockets in a folder of its own, which only this kernel sees.
        self._kernel_folder = kernel_folder()
        try:
            with tempfile.TemporaryDirectory(prefix="peft-sandbox-") as tmp:
                checks = self.checks or str(compile_checks(Path(tmp) / "compiled"))
                write_kernelspec(
                    Path(tmp) / "jupyter",
                    writable=[self._kernel_folder / "s"],  # its sockets; the connection file stays read-only
                    hidden=[Path(p) for p in [*(self.hidden or self._default_hidden()), *_kernel_files()]],
                    readable=[*(Path(p) for p in self.readable), self._kernel_folder],
                    memory_mb=self.memory_mb,
                    warm=self.warm,
                )
                with _prepended(JUPYTER_PATH=str(Path(tmp) / "jupyter"), PYTHONPATH=checks):
                    return super().preprocess(nb, resources, km)
        finally:
            shutil.rmtree(self._kernel_folder, ignore_errors=True)

    # ---- the trusted side of the kernel guard (peft_grader.kernel_guard) -------------------------------------
    def _start_guarding(self, nb, resources: dict, lab: str | None) -> None:
        """What this notebook's guarding needs: the locked cells that record provenance, the test cells whose
        files are kept as they were made, the modules written by %%writefile cells (reviewed as code)."""
        self._lab = lab
        self._records = lab_registry(lab, "RECORDS") if lab else {}
        self._watched = lab_registry(lab, "WATCH") if lab else {}
        self._records_before = lab_registry(lab, "RECORDS_BEFORE") if lab else {}
        self._file_checks = (
            {g for g, t in outside_targets(lab).items() if t.startswith("files.")} if lab else set()
        )
        self._held: list[str] = []
        self._configured = self._restarted = False
        self._labels: dict[int, str] = {}  # execution count -> the cell's name, for the evidence
        self._written = {
            _digest_text(_writefile_body(c.source)) for c in nb.cells if _writefile_body(c.source)
        }
        self._files = None
        notebook_dir = Path(resources.get("metadata", {}).get("path") or ".")
        if lab and self._file_checks:
            folders = list(checks_data("__init__.py")["lab_paths"](lab).values())
            self._files = FilesAsMade(self._store(resources), notebook_dir, folders)

    def _store(self, resources: dict) -> Path:
        if self.as_made:
            return Path(self.as_made)
        meta = resources["nbgrader"]
        coursedir = CourseDirectory(config=self.config)
        return Path(coursedir.root) / "as_made" / meta.get("student", ".") / meta["assignment"]

    def _finish_guarding(self, nb) -> None:
        if self._files is not None:
            self._held += self._files.changed_since()  # "PATH rewritten after test_x checked it"
        if self._held:
            review = nb.metadata.setdefault(REVIEW_KEY, {})
            review["held"] = list(dict.fromkeys([*review.get("held", []), *self._held]))

    async def _ask(self, content: dict) -> dict:
        """One request to the kernel guard, out of band (no transformer or callback sees it), and its reply."""
        msg = self.kc.session.msg(kernel_guard.REQUEST, content)
        self.kc.shell_channel.send(msg)
        try:
            reply = (await self.kc._async_recv_reply(msg["header"]["msg_id"], timeout=GUARD_TIMEOUT_S))[
                "content"
            ]
        except Exception as err:  # noqa: BLE001 - a guard that does not answer is itself evidence
            self._held.append(f"the kernel guard did not answer ({type(err).__name__}): it was tampered with")
            return {}
        self._held += [self._evidence(e) for e in reply.get("held", [])]
        if reply.get("status") != "ok":
            self._held.append(f"the kernel guard failed: {reply.get('error', '')[:200]}")
        return reply

    def _evidence(self, evidence: dict, cell: str = "") -> str:
        """'cell NAME line N: what' for one use of a capability the guard reported (`cell`: the one it arrived in)."""
        where = f"cell {cell}" if cell and evidence.get("this_cell") else ""
        if (count := evidence.get("execution_count")) is not None:
            where = f"cell {self._labels.get(count, f'[{count}]')}"
        elif evidence.get("file"):
            where = f"file {evidence['file']}"
        if evidence.get("line"):
            where += f" line {evidence['line']}"
        return f"{where}: {evidence.get('detail', '')}".strip(": ")

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        meta = cell.metadata.get("nbgrader", {})
        grade_id = meta.get("grade_id")
        guarded = self.isolate and cell.cell_type == "code" and cell.source.strip()
        if guarded and not self._configured:
            self._configured = True
            await self._ask({"configure": [c.source for c in self.nb.cells if _graders(c)]})
        recorded = {}
        if guarded and grade_id in self._records_before and self.kc is not None:  # what the cell starts from
            recorded = await self._record(grade_id, self._records_before[grade_id])
        if guarded and (_hidden_test(cell) or grade_id in self._records or grade_id in self._watched):
            # a hidden test's checks are imported and sealed in the clean room: changed while it runs, it is void
            await self._ask(
                {
                    "clean_room": True,
                    "lab": self._lab if _hidden_test(cell) else None,
                    "watch": grade_id in self._watched,  # note the learner's code this cell's work calls
                }
            )
        try:
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        finally:
            label = grade_id or f"#{cell_index + 1}"
            if cell.get("execution_count") is not None:
                self._labels[cell.execution_count] = label
            self._take_holds(cell, label)
            if meta.get("grade") and not meta.get("solution"):
                _stderr_to_stdout(cell)
            if guarded and grade_id in self._watched and self.kc is not None:
                await self._ask({"unwatch": True})  # what the watch saw in this cell, and no further
            if guarded and grade_id in self._records and self.kc is not None:
                recorded |= await self._record(grade_id, self._records[grade_id])
            if recorded:
                cell.metadata[kernel_guard.RECORDED_KEY] = recorded
            if self._files is not None and grade_id in self._file_checks:
                self._files.checkpoint(grade_id)

    async def _record(self, grade_id: str, names: dict) -> dict:
        """The kernel guard's record of `names` in the locked cell `grade_id`'s kernel, now."""
        if self._restarted:  # the work of the cells before the restart is gone: nothing to record
            return {name: {"restarted": True} for name in names}
        reply = await self._ask({"record": {"cell": grade_id, "names": names}})
        return reply.get("records") or {
            name: {"unrecorded": "the kernel guard recorded nothing"} for name in names
        }

    execute_cell = run_sync(
        async_execute_cell
    )  # nbconvert calls the sync one, which nbclient binds to its own

    def _take_holds(self, cell, label: str) -> None:
        """The guard's evidence out of the cell's outputs (nobody else reads it) and into the review record;
        a module written by a %%writefile cell, whose body the static review read as code, is not held."""
        kept = []
        for output in cell.get("outputs", []):
            evidence = (
                output.get("data", {}).get(kernel_guard.HOLD_MIME)
                if output.get("output_type") == "display_data"
                else None
            )
            if not isinstance(evidence, dict):
                kept.append(output)
            elif evidence.get("sha256") not in self._written:
                self._held.append(self._evidence(evidence, label))
                if evidence.get("void"):  # the test's own verdict cannot be trusted: it scores nothing
                    kept.append(
                        nbformat.v4.new_output(
                            "error", ename="TamperingBlocked", evalue=evidence.get("detail", ""), traceback=[]
                        )
                    )
        cell.outputs = kept

    def _default_hidden(self) -> list[str]:
        coursedir = CourseDirectory(config=self.config)
        root = Path(coursedir.root)
        course = [
            root / coursedir.submitted_directory,
            root / coursedir.autograded_directory,
            root / "feedback",
        ]
        grader = [SOURCE, GRADER / "checks", GRADER / "mistakes", GRADER / "adversarial"]
        return [str(p) for p in [*course, root / "as_made", *grader] if p.exists()]

    def create_kernel_manager(self):
        km = super().create_kernel_manager()
        if self.isolate:  # the kernel has a network namespace of its own: unix sockets, not TCP
            km.transport, km.ip = "ipc", str(self._kernel_folder / "s" / "k")
            km.connection_file = str(self._kernel_folder / "kernel.json")
        return km

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and self.budget and time.monotonic() - self._started > self.budget:
            cell.outputs = [
                nbformat.v4.new_output(
                    "error",
                    ename="WallBudgetExceeded",
                    traceback=[],
                    evalue=f"not run: the notebook used its wall budget of {self.budget:g} s",
                )
            ]
            return cell, resources
        try:
            return super().preprocess_cell(cell, resources, index)
        except DeadKernelError as err:
            cell.outputs.append(
                nbformat.v4.new_output(
                    "error",
                    ename="KernelRestarted",
                    evalue=f"{err}: the kernel died or stopped answering while running this cell (exit, "
                    "crash, memory limit, or a loop that ignores interrupts). It was restarted; later "
                    "cells ran without this notebook's earlier state.",
                    traceback=[],
                )
            )
            run_sync(self._restart_kernel)()
            return cell, resources

    def _get_timeout(self, cell):
        """The course's timeout, or the longer one the master declares for this locked cell."""
        timeout = super()._get_timeout(cell)
        declared = self._declared.get(cell.metadata.get("nbgrader", {}).get("grade_id")) if cell else None
        return max(timeout, declared) if timeout and declared else timeout

    async def _async_handle_timeout(self, timeout, cell=None):
        reply = await super()._async_handle_timeout(timeout, cell)
        if not await self._answers_within(INTERRUPT_GRACE_S):
            raise DeadKernelError(
                f"no answer {INTERRUPT_GRACE_S} s after interrupting a cell that ran past {timeout} s"
            )
        return reply

    async def _restart_kernel(self) -> None:
        self._configured = False  # a new kernel: a new guard, told again which cells are the grader's
        self._restarted = True  # the reason names the cell; provenance recorded after it would be of nothing
        self.kc.stop_channels()
        await self.km.restart_kernel(now=True)
        await self.async_start_new_kernel_client()

    async def _answers_within(self, seconds: float) -> bool:
        msg_id = self.kc.kernel_info()
        deadline = asyncio.get_running_loop().time() + seconds
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                msg = await self.kc.shell_channel.get_msg(timeout=left)
            except Exception:  # noqa: BLE001 - queue.Empty: no answer in time
                return False
            if msg["parent_header"].get("msg_id") == msg_id:
                return True
        return False
