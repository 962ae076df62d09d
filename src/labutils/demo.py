"""`make demo`: the course end to end on this machine, with a summary at each step.

Builds the tiny models, runs the doctor and the QLoRA smoke path, regenerates the learner release
(into out/demo, compared with the committed one), then grades a sample class through nbgrader: the
reference solution plus every mistake-catalogue entry as a student, and prints the gradebook.
"""

from __future__ import annotations

import filecmp
import time
from pathlib import Path

from labutils import catalogue, doctor, grading, models, smoke


def _step(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def main(out_dir: Path = Path("out/demo")) -> int:
    out_dir = Path(out_dir).resolve()
    started = _step("1/5 course models (tiny profile)")
    models.build_all()

    _step("2/5 environment doctor")
    if doctor.main() != 0:
        return 1

    _step("3/5 QLoRA smoke run")
    if smoke.main() != 0:
        return 1

    _step("4/5 learner release (nbgrader generate_assignment)")
    released = grading.release(out_dir / "release")
    for path in released:
        same = filecmp.cmp(path, grading.NOTEBOOKS / path.name, shallow=False)
        print(f"{path.name}: {'matches' if same else 'DIFFERS FROM'} the committed notebooks/{path.name}")

    _step("5/5 grade a sample class: the reference and every mistake-catalogue entry")
    labs = grading.labs()
    students = catalogue.write_class(out_dir / "class", labs)
    print(
        f"{len(students)} submissions for {', '.join(labs)}; each runs the whole lab (about 40 s each here)"
    )
    results = grading.grade(out_dir / "class", out_dir / "grading")
    print(grading.summary_table(results))
    problems = catalogue.unexpected(results, students)
    print(
        f"\nfeedback HTML: {out_dir / 'grading' / 'feedback'}\ngrades CSV:    {out_dir / 'grading' / 'grades.csv'}"
    )
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    if problems:
        print("UNEXPECTED results (expected scores are in grader/mistakes/):", *problems, sep="\n- ")
        return 1
    print("every catalogue entry scored exactly its expected points")
    return 0
