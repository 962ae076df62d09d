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

from peft_grader.nbcourse import GRADER, SOURCE
from peft_grader.preprocessors import declared_timeouts, master_of
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

    def preprocess(self, nb, resources=None, km=None):
        self._started = time.monotonic()
        nbgrader = (resources or {}).get("nbgrader", {})
        self._declared = (
            declared_timeouts(master_of(self, resources))
            if {"assignment", "notebook"} <= set(nbgrader)
            else {}
        )
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

    def _default_hidden(self) -> list[str]:
        coursedir = CourseDirectory(config=self.config)
        root = Path(coursedir.root)
        course = [
            root / coursedir.submitted_directory,
            root / coursedir.autograded_directory,
            root / "feedback",
        ]
        grader = [SOURCE, GRADER / "checks", GRADER / "mistakes", GRADER / "adversarial"]
        return [str(p) for p in course + grader if p.exists()]

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
