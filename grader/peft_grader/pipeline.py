"""The per-submission pipeline: a scratch course, the sandboxed kernel, `nbgrader autograde`, the
verdicts read back and checked from outside.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from peft_grader.nbcourse import (
    GRADER,
    SOURCE,
    grading_env,
    make_course,
    master_notebook,
    nbgrader,
    restored_ids,
)
from peft_grader.scores import LabResult, check_messages, errors_named, read_gradebook, write_atomically
from peft_grader.verify import outside_verdicts


@dataclass
class Job:
    lab: str
    student: str
    src: Path
    out_dir: Path
    gradebook: Path  # the class gradebook right after generate_assignment: each scratch course starts from it
    timeout: int | None
    budget: float
    sandbox: bool
    threads: int  # CPU threads for the kernel's torch: the machine's cores shared among the workers
    checks: Path | None = None  # the hidden checks as bytecode only, for sandboxed kernels (compile_checks)


def compile_checks(folder: Path) -> Path:
    """grader/checks as a package of .pyc files without their source, under folder/checks.

    Sandboxed kernels import the checks from here and cannot see grader/checks, so no cell can print
    the checks' source into its output (and so into the feedback), and no traceback can quote it.
    """
    import py_compile

    target = Path(folder) / "checks"
    target.mkdir(parents=True)
    for source in sorted((GRADER / "checks").glob("*.py")):
        py_compile.compile(str(source), cfile=str(target / f"{source.stem}.pyc"), doraise=True)
    return Path(folder)


def repair_structure(nb, lab: str) -> None:
    """Put the master's cells back in the master's order, before nbgrader sees the notebook.

    nbgrader restores the content of locked and test cells but not where they stand, so a test moved
    below a late fix would pass. Each master cell moves back to its place with the learner's own cells
    that followed it; copies of a master cell become plain cells (nbgrader 0.9.6 crashes on them).
    """
    order = {
        c.metadata["nbgrader"]["grade_id"]: i
        for i, c in enumerate(master_notebook(lab).cells)
        if "nbgrader" in c.metadata
    }
    groups, seen = [[-1, []]], set()
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in seen:
            del cell.metadata["nbgrader"]
        elif gid in order:
            seen.add(gid)
            groups.append([order[gid], []])
        groups[-1][1].append(cell)
    nb.cells = [cell for _, cells in sorted(groups, key=lambda g: g[0]) for cell in cells]


def grade_one(job: Job) -> LabResult:
    """Autograde one submission in its own scratch course, so it can reach nothing but its own folder."""
    from peft_grader import sandbox, tamper

    started = time.perf_counter()
    result = LabResult(job.student, job.lab)
    scratch = job.out_dir / ".work" / job.lab / job.student
    shutil.rmtree(scratch, ignore_errors=True)
    make_course(scratch, timeout=job.timeout, sandbox=job.sandbox, budget=job.budget)
    shutil.copyfile(job.gradebook, scratch / "gradebook.db")
    dest = scratch / "submitted" / job.student / job.lab
    dest.mkdir(parents=True)
    nb = nbformat.read(job.src, as_version=4)
    repair_structure(nb, job.lab)
    removed, flagged = tamper.sanitize(nb, restored_ids(job.lab))
    if removed:
        result.reason = f"tampering removed before grading: {'; '.join(removed[:3])}"
    if flagged:
        result.review = f"flagged for review (ran as written): {'; '.join(flagged[:3])}"
    nbformat.write(nb, dest / f"{job.lab}.ipynb")
    # Oversubscribed torch threads (every kernel using every core) make parallel grading many times slower.
    threads = str(job.threads)
    env = grading_env() | {
        "JUPYTER_PATH": str(scratch / "jupyter"),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    # ipc sockets need a short absolute path (unix sockets allow ~100 characters) outside the notebook.
    sockets = Path(tempfile.mkdtemp(prefix="peft-k-"))
    with (scratch / "nbgrader_config.py").open("a") as config:
        config.write(f"c.KernelManager.ip = {str(sockets / 'k')!r}\n")
    if job.sandbox:
        from labutils.models import cache_dir

        hidden = [job.out_dir, SOURCE, GRADER / "mistakes", GRADER / "adversarial", GRADER / "checks"]
        readable = [p for p in (cache_dir(),) if p.exists() and p.resolve().is_relative_to(job.out_dir)]
        if job.checks:  # after the hidden, empty grader/checks on PYTHONPATH, which imports skip
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(job.checks), env.get("PYTHONPATH")) if p)
        sandbox.write_kernelspec(scratch / "jupyter", writable=[], hidden=hidden, readable=readable)
    proc = nbgrader(
        scratch,
        "autograde",
        job.lab,
        "--student",
        job.student,
        "--force",
        check=False,
        env=env,
        budget=job.budget * 1.5 + 120,  # a backstop: SandboxExecute stops running cells at job.budget
    )
    shutil.rmtree(sockets, ignore_errors=True)
    write_atomically(job.out_dir / "logs" / job.lab / f"{job.student}.log", proc.stdout or "")
    read_gradebook(scratch, job.lab, job.student, result)
    autograded = scratch / "autograded" / job.student / job.lab
    if proc.returncode == -9:
        result.reason = f"killed long after the wall budget of {job.budget:g} s: the notebook never finished"
    elif proc.returncode != 0 or not (autograded / f"{job.lab}.ipynb").exists():
        last = (proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        result.reason = f"autograde failed: {last[0][:200]}"
    if (autograded / f"{job.lab}.ipynb").exists():
        messages = check_messages(autograded / f"{job.lab}.ipynb")
        if errors_named(autograded / f"{job.lab}.ipynb", "WallBudgetExceeded") and not result.reason:
            result.reason = f"stopped at the wall budget of {job.budget:g} s: later cells were not run"
        if blocked := errors_named(autograded / f"{job.lab}.ipynb", "TamperingBlocked"):
            result.reason = result.reason or f"tampering blocked while grading in cell {blocked[0]}"
        if (
            restarted := errors_named(autograded / f"{job.lab}.ipynb", "KernelRestarted")
        ) and not result.reason:
            result.reason = (
                f"the kernel died or ignored an interrupt in cell {restarted[0]} and was restarted; "
                "later cells ran without the earlier state"
            )
        outside = outside_verdicts(job.lab, autograded)
        for check in result.checks:
            if check.score >= check.max_score and outside.get(check.name):
                # passed inside the learner's kernel, failed from outside: the kernel was tampered with
                check.score, check.message = 0.0, f"[verified outside the notebook] {outside[check.name]}"
            elif check.score < check.max_score:
                check.message = messages.get(check.name, "")
        result.score = sum(c.score for c in result.checks)
    result.seconds = time.perf_counter() - started
    return result
