"""The nbgrader side of the grading sandbox (`peft_grader.sandbox` starts the kernels): cells that kill
their kernel or ignore interrupts cost that cell only, and a wall budget bounds the whole notebook."""

from __future__ import annotations

import asyncio
import time

import nbformat
from nbclient.exceptions import DeadKernelError
from nbclient.util import run_sync
from nbgrader.preprocessors import Execute
from traitlets import Float

from peft_grader.sandbox import INTERRUPT_GRACE_S


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

    def preprocess(self, nb, resources=None, km=None):
        self._started = time.monotonic()
        return super().preprocess(nb, resources, km)

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
