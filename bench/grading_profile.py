"""Where the time goes when one submission is graded, phase by phase.

Grades a lab's reference submission once through `labutils grade --workers 1` and splits its wall time:
  scratch course       the submission's own nbgrader course (files and a copy of the gradebook)
  nbgrader start       `nbgrader autograde` starting, its preprocessors, until the kernel is asked for
  kernel start         until the first cell runs (a cold kernel imports its libraries here; a warm
                       one is a fork of the zygote)
  imports cell         the lab's imports cell (the libraries a warm kernel already has)
  learner's cells      every cell without a hidden check: model loads, training, saving (the top three named)
  hidden checks        the test cells
  nbgrader finish      after the last cell: writing the autograded notebook and the gradebook
  outside checks       peft_grader.verify in a fresh process (on-disk and evidence checks)
  feedback and grades  generate_feedback and export, once per lab and class
  assignment           generate_assignment, once per lab and class
  class set-up, other  the class course, the intake, the tiny models' check, the checks compiled
The zygote's own start (the imports, once per grading process) is shown apart. Wall-clock seconds on
this machine; run it on an idle machine.

    python bench/grading_profile.py [--lab 04_qlora] [--kernels warm|cold]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import nbformat

from peft_grader import catalogue, grading, pipeline, warm


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lab", default="04_qlora")
    parser.add_argument("--kernels", choices=["warm", "cold"], default="warm")
    args = parser.parse_args()
    phases: dict[str, float] = defaultdict(float)
    marks: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            start = time.time()
            try:
                return fn(*a, **k)
            finally:
                marks.setdefault(f"{name} start", start)
                marks[f"{name} end"] = time.time()
                phases[name] += time.time() - start

        return wrapper

    pipeline.nbgrader = timed("autograde", pipeline.nbgrader)
    pipeline.make_course = timed("scratch course", pipeline.make_course)
    pipeline.outside_verdicts = timed("outside checks", pipeline.outside_verdicts)
    real = grading.nbgrader
    grading.nbgrader = lambda course, command, *rest, **kw: timed(command, real)(course, command, *rest, **kw)
    zygote = 0.0
    threads = os.cpu_count() or 1  # what grade() gives one worker's kernels
    if args.kernels == "warm":
        start = time.perf_counter()
        warm.zygote(threads)
        zygote = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="peft-profile-") as tmp:
        root = Path(tmp)
        students = catalogue.write_class(root / "subs", [args.lab])
        for student in students:
            if student != "reference":
                shutil.rmtree(root / "subs" / student)
        started = time.time()
        [result] = grading.grade(
            root / "subs", root / "course", [args.lab], quiet=True, workers=1, kernels=args.kernels
        )
        total = time.time() - started
        graded = nbformat.read(
            root / "course" / "autograded" / "reference" / args.lab / f"{args.lab}.ipynb", 4
        )
    cells = []
    for cell in graded.cells:
        timing = cell.metadata.get("execution", {})
        if cell.cell_type == "code" and "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id", cell.id)
            cells.append((gid, _stamp(timing["iopub.execute_input"]), _stamp(timing["shell.execute_reply"])))
    first, last = cells[0][1], cells[-1][2]
    seconds = {gid: end - begin for gid, begin, end in cells}
    imports = seconds.pop("imports", 0.0)
    checks = sum(s for gid, s in seconds.items() if gid.startswith("test_"))
    learner = {gid: s for gid, s in seconds.items() if not gid.startswith("test_")}
    before_cells = first - marks["autograde start"]
    kernel = _kernel_start(args.kernels, threads)
    table = [
        ("scratch course", phases["scratch course"]),
        ("nbgrader start", before_cells - kernel),
        ("kernel start", kernel),
        ("imports cell", imports),
        ("learner's cells", sum(learner.values())),
        ("hidden checks", checks),
        ("nbgrader finish", marks["autograde end"] - last),
        ("outside checks", phases["outside checks"]),
        ("feedback and grades", phases["generate_feedback"] + phases["export"]),
    ]
    per_submission = sum(s for name, s in table if name != "feedback and grades")
    table += [
        ("assignment", phases["generate_assignment"]),
        ("class set-up, other", total - sum(s for _, s in table) - phases["generate_assignment"]),
    ]
    top = sorted(learner.items(), key=lambda kv: -kv[1])[:3]
    print(
        f"\none {args.lab} reference submission, {args.kernels} kernels: {total:.1f} s in grade(), score "
        f"{result.score:g}/{result.max_score:g}"
    )
    if zygote:
        print(f"(the zygote started once before it, in {zygote:.1f} s: the imports every later kernel skips)")
    print(f"{'phase':<20} {'s':>6} {'share':>6}")
    accounted = sum(s for _, s in table)
    for name, s in table:
        print(f"{name:<20} {s:6.1f} {s / accounted:6.0%}")
    print(f"{'(learner top 3)':<20} " + ", ".join(f"{gid} {s:.1f}" for gid, s in top))
    print(f"per submission (the first nine rows but feedback): {per_submission:.1f} s")


def _kernel_start(kernels: str, threads: int) -> float:
    """Seconds from asking for a sandboxed kernel (the kernelspec grading writes) to its first answer."""
    from jupyter_client import KernelManager

    from peft_grader import sandbox

    folder = sandbox.kernel_folder()  # as SandboxExecute starts a kernel
    try:
        spec = sandbox.write_kernelspec(
            folder / "jupyter",
            [folder / "s"],
            [sandbox.kernels_folder()],
            [folder],
            warm=warm.zygote(threads) if kernels == "warm" else "",
        )
        km = KernelManager(kernel_name="python3")
        km.kernel_spec_manager.kernel_dirs.insert(0, str(spec.parent))
        km.transport, km.ip = "ipc", str(folder / "s" / "k")
        km.connection_file = str(folder / "kernel.json")
        start = time.perf_counter()
        km.start_kernel(cwd=str(folder / "s"))
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        kc.execute_interactive("import torch, transformers, peft, bitsandbytes", timeout=120)
        seconds = time.perf_counter() - start
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return seconds


if __name__ == "__main__":
    main()
