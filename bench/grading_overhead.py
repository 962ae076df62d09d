"""Grading cost: plain `nbgrader autograde` against `labutils grade` (sandboxed), serial and parallel.

Grades the same submissions (the reference and the first N-1 mistake-catalogue entries of a lab) four
ways in one run and prints seconds per submission and the ratios:
  plain     one nbgrader course: `nbgrader autograde`, `generate_feedback`, `export` (no isolation)
  cold      `labutils grade --workers 1 --cold-kernels` (scratch course + a bubblewrap kernel started
            afresh + tamper filter + outside checks)
  warm      `labutils grade --workers 1` (the same, each kernel forked from a zygote that imported the
            libraries once: peft_grader.warm; the zygote's start is counted)
  parallel  `labutils grade --workers W` (W = the machine's cores; warm kernels)

    python bench/grading_overhead.py [--lab 04_qlora] [-n 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from peft_grader import catalogue, grading, nbcourse


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lab", default="04_qlora")
    parser.add_argument("-n", type=int, default=4, help="submissions (default 4)")
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="peft-bench-") as tmp:
        root = Path(tmp)
        students = catalogue.write_class(root / "subs", [args.lab])
        wrong = sorted(s for s in students if s != "reference")
        for extra in wrong[max(args.n - 1, 0) :]:  # keep the reference and N-1 wrong submissions
            shutil.rmtree(root / "subs" / extra)
        names = sorted(p.name for p in (root / "subs").iterdir())

        plain = nbcourse.make_course(root / "plain", settings={"SandboxExecute.isolate": False})
        nbcourse.nbgrader(plain, "generate_assignment", args.lab, "--force")
        for name in names:
            target = plain / "submitted" / name / args.lab
            target.mkdir(parents=True)
            shutil.copyfile(root / "subs" / name / f"{args.lab}.ipynb", target / f"{args.lab}.ipynb")

        def plain_pipeline():
            nbcourse.nbgrader(plain, "autograde", args.lab, "--force", check=False)
            nbcourse.nbgrader(plain, "generate_feedback", args.lab, "--force", check=False)
            nbcourse.nbgrader(plain, "export", check=False)

        scores = {}

        def isolated(mode, n_workers, kernels):
            results = grading.grade(
                root / "subs", root / mode, [args.lab], quiet=True, workers=n_workers, kernels=kernels
            )
            scores[mode] = {(r.student, r.score, r.reason) for r in results}

        times = {"plain": _timed(plain_pipeline)}
        times["cold"] = _timed(lambda: isolated("cold", 1, "cold"))
        times["warm"] = _timed(lambda: isolated("warm", 1, "warm"))  # its first call starts the zygote
        times[f"parallel x{workers}"] = _timed(lambda: isolated(f"parallel x{workers}", workers, "warm"))
    n = len(names)
    print(f"\n{n} submissions of {args.lab} ({', '.join(names)})")
    print(f"{'mode':<14} {'total s':>8} {'s/submission':>13} {'vs plain':>9}")
    for mode, seconds in times.items():
        print(f"{mode:<14} {seconds:8.1f} {seconds / n:13.1f} {seconds / times['plain']:9.2f}")
    for mode in scores:
        if mode != "cold":
            same = scores[mode] == scores["cold"]
            print(f"{mode} scores {'identical to' if same else 'DIFFER FROM'} the cold run's")


if __name__ == "__main__":
    main()
