"""`make demo`: the course end to end on this machine, with a summary at each step.

Builds the tiny models, runs the doctor and the QLoRA smoke path, runs every lab's reference solution
as a learner would (timed), regenerates the learner release (into out/demo, compared with the
committed one), then grades a sample class through nbgrader: the reference solution of every lab,
and per lab one mistake-catalogue entry and one correct variant as students; it prints the gradebook.
(`make test` grades the whole catalogue.)
"""

from __future__ import annotations

import filecmp
import time
from pathlib import Path

from labutils import doctor, models, smoke
from peft_grader import catalogue, execute, grading, nbcourse, release, report


def _step(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def main(out_dir: Path = Path("out/demo")) -> int:
    out_dir = Path(out_dir).resolve()
    started = _step("1/6 course models (tiny profile)")
    models.build_all()

    _step("2/6 environment doctor")
    if doctor.main() != 0:
        return 1

    _step("3/6 QLoRA smoke run")
    if smoke.main() != 0:
        return 1

    labs = nbcourse.labs()
    _step(f"4/6 every lab's reference solution, run as a learner runs it ({len(labs)} labs)")
    runs = execute.run_labs(labs, out_dir / "labs")
    print(execute.table(runs))
    if any(r.error for r in runs):
        return 1

    _step("5/6 learner release (nbgrader generate_assignment)")
    released = release.release(out_dir / "release")
    for path in released:
        same = filecmp.cmp(path, nbcourse.NOTEBOOKS / path.name, shallow=False)
        print(f"{path.name}: {'matches' if same else 'DIFFERS FROM'} the committed notebooks/{path.name}")

    _step("6/6 grade a sample class: each lab's reference, one mistake and one correct variant")
    students = catalogue.write_class(out_dir / "class", labs, sample=True)
    print(f"{len(students)} students over {len(labs)} labs; each submission runs its whole lab in a sandbox")
    results = grading.grade(out_dir / "class", out_dir / "grading")
    submitted = [r for r in results if r.reason != "missing submission"]  # a sample student does one lab
    print(report.summary_table(submitted))
    problems = catalogue.unexpected(results, students)
    print(
        f"\nfeedback HTML: {out_dir / 'grading' / 'feedback'}\ngrades CSV:    {out_dir / 'grading' / 'grades.csv'}"
        f"\nclass report:  {out_dir / 'grading' / report.REPORT}"
    )
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    if problems:
        print("UNEXPECTED results (expected scores are in grader/mistakes/):", *problems, sep="\n- ")
        return 1
    print("every sample submission scored exactly its expected points")
    return 0
