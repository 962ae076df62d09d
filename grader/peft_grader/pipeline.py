"""The per-submission pipeline: a scratch course, the sandboxed kernel, `nbgrader autograde`, the
verdicts read back and checked from outside.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from peft_grader.as_made import materialize
from peft_grader.intake import SIDECARS
from peft_grader.nbcourse import (
    GRADER,
    SOURCE,
    grading_env,
    make_course,
    nbgrader,
)
from peft_grader.preprocessors import REVIEW_KEY
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
    # sandboxed kernels (and the outside checks) forked from this process's zygote, not started cold
    warm: bool = False
    # more folders the kernel must not see: the submissions given to grade (the class's work), the class
    # hub that holds them (homes, settings, passwords: `class_folders`)
    hidden: tuple[Path, ...] = ()


def grade_one(job: Job) -> LabResult:
    """Autograde one submission in its own scratch course, so it can reach nothing but its own folder."""
    from labutils.models import cache_dir

    started = time.perf_counter()
    result = LabResult(job.student, job.lab)
    scratch = job.out_dir / ".work" / job.lab / job.student
    shutil.rmtree(scratch, ignore_errors=True)
    # The sandbox hides the whole grading folder and the class's submissions (other students' work), the
    # class hub they came from, and the grader's own files; the order repair and the tamper review are
    # nbgrader preprocessors (grader/nbgrader_config.py).
    settings = {"SandboxExecute.isolate": job.sandbox, "SandboxExecute.budget": float(job.budget)}
    zygote = ""
    if job.sandbox:
        hidden = [
            job.out_dir,
            *job.hidden,
            SOURCE,
            GRADER / "mistakes",
            GRADER / "adversarial",
            GRADER / "checks",
        ]
        hidden = [h for h in hidden if not any(h != o and h.is_relative_to(o) for o in hidden)]  # outermost
        readable = [  # the models, where they sit in a hidden folder (a hub's models/)
            p for p in (cache_dir(),) if p.exists() and any(p.resolve().is_relative_to(h) for h in hidden)
        ]
        settings |= {
            "SandboxExecute.hidden": [str(p) for p in hidden],
            "SandboxExecute.readable": [str(p) for p in readable],
        }
        settings |= {"SandboxExecute.checks": str(job.checks or "")}
        if job.warm:
            from peft_grader import warm

            zygote = settings["SandboxExecute.warm"] = warm.zygote(job.threads)
    make_course(scratch, timeout=job.timeout, settings=settings)
    shutil.copyfile(job.gradebook, scratch / "gradebook.db")
    dest = scratch / "submitted" / job.student / job.lab
    dest.mkdir(parents=True)
    shutil.copyfile(job.src, dest / f"{job.lab}.ipynb")
    for sidecar in SIDECARS:  # collected from the exchange: the feedback goes back through it
        if job.src.parent.name == job.lab and (job.src.parent / sidecar).is_file():
            shutil.copyfile(job.src.parent / sidecar, dest / sidecar)
    # Oversubscribed torch threads (every kernel using every core) make parallel grading many times slower.
    threads = str(job.threads)
    env = grading_env() | {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
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
    write_atomically(job.out_dir / "logs" / job.lab / f"{job.student}.log", proc.stdout or "")
    read_gradebook(scratch, job.lab, job.student, result)
    autograded = scratch / "autograded" / job.student / job.lab
    if (autograded / f"{job.lab}.ipynb").exists():
        review = nbformat.read(autograded / f"{job.lab}.ipynb", as_version=4).metadata.get(REVIEW_KEY, {})
        if review.get("removed"):
            result.reason = f"tampering removed before grading: {'; '.join(review['removed'][:3])}"
        if review.get("flagged"):
            result.review = f"flagged for review (ran as written): {'; '.join(review['flagged'][:3])}"
        result.held = list(review.get("held", []))
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
        views = (
            materialize(scratch / "as_made" / job.student / job.lab, scratch / "views") and scratch / "views"
        )
        outside = outside_verdicts(job.lab, autograded, zygote, views or None)
        for check in result.checks:
            if check.score >= check.max_score and outside.get(check.name):
                # passed inside the learner's kernel, failed from outside: the kernel was tampered with
                check.score, check.message = 0.0, f"[verified outside the notebook] {outside[check.name]}"
            elif check.score < check.max_score:
                check.message = messages.get(check.name, "")
        result.score = sum(c.score for c in result.checks)
    result.seconds = time.perf_counter() - started
    return result
