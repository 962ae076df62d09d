"""Compare two graded classes cell by cell: did a change to the checks or the engine change any verdict?

    python bench/compare_classes.py BEFORE AFTER

BEFORE and AFTER are course folders that `labutils grade SUBMISSIONS --out FOLDER` wrote for the same
submissions (for every catalogue entry: `python bench/compare_classes.py --grade FOLDER` grades both
catalogues into FOLDER as the test suite's class fixture does). It prints every submission whose score,
reason or review differs, every test cell whose points or message differ, and every feedback file whose
graded part differs (the tutor's note, the graded cells' panels and error outputs; not the learner's own
outputs, which hold timings), then one line of totals. Exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

FIELDS = ("score", "max_score", "reason", "review", "manual_points")
CHECK_FIELDS = ("score", "max_score", "message")


def results(course: Path) -> dict[tuple[str, str], dict]:
    return {(r["student"], r["lab"]): r for r in json.loads((course / "summary.json").read_text())}


def graded_feedback(course: Path) -> dict[str, tuple]:
    """The part of each feedback file the checks decide: the tutor's note, graded panels, error outputs."""
    found = {}
    for path in sorted((course / "feedback").glob("*/*/*.html")):
        text = path.read_text()
        note = re.search(r'<div id="tutor-note">.*?</div>\s*</div>', text, re.S)
        panels = re.findall(
            r'<div class="panel panel-primary nbgrader_cell">.*?<div class="panel-body">.*?</div>', text, re.S
        )
        errors = re.findall(r'<div class="output_subarea output_text output_error">.*?</div>', text, re.S)
        found[path.relative_to(course / "feedback").as_posix()] = (
            note.group(0) if note else "",
            panels,
            errors,
        )
    return found


def differences(before: Path, after: Path) -> tuple[list[str], str]:
    old, new = results(before), results(after)
    found = [f"only in one class: {key}" for key in sorted(set(old) ^ set(new))]
    for key in sorted(set(old) & set(new)):
        a, b = old[key], new[key]
        found += [f"{key} {f}: {a[f]!r} -> {b[f]!r}" for f in FIELDS if a[f] != b[f]]
        checks_a, checks_b = ({c["name"]: c for c in r["checks"]} for r in (a, b))
        for name in sorted(set(checks_a) | set(checks_b)):
            x, y = checks_a.get(name, {}), checks_b.get(name, {})
            found += [
                f"{key} {name} {f}: {x.get(f)!r} -> {y.get(f)!r}"
                for f in CHECK_FIELDS
                if x.get(f) != y.get(f)
            ]
    fb_old, fb_new = graded_feedback(before), graded_feedback(after)
    found += [
        f"feedback differs: {name}"
        for name in sorted(set(fb_old) | set(fb_new))
        if fb_old.get(name) != fb_new.get(name)
    ]
    cells = sum(len(r["checks"]) for r in old.values())
    return found, f"{len(old)} submissions, {cells} graded cells, {len(fb_old)} feedback files compared"


def grade(folder: Path) -> None:
    """Both catalogues graded as tests/conftest.py's class fixture grades them."""
    from peft_grader import adversarial, catalogue, grading, nbcourse

    catalogue.write_class(folder / "submissions", nbcourse.labs())
    adversarial.write_class(folder / "submissions", nbcourse.labs())
    grading.grade(folder / "submissions", folder / "course", quiet=True, workers=3, timeout=180, budget=300)
    for probe in adversarial.escaped_probes(folder / "course"):
        probe.unlink(missing_ok=True)
    print(f"graded into {folder / 'course'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("courses", nargs="*", type=Path, help="BEFORE AFTER: two course folders")
    parser.add_argument("--grade", type=Path, help="grade both catalogues into this new folder instead")
    args = parser.parse_args(argv)
    if args.grade:
        grade(args.grade)
        return 0
    if len(args.courses) != 2 or not all((c / "summary.json").is_file() for c in args.courses):
        parser.error("give two course folders written by `labutils grade` (each with summary.json)")
    found, totals = differences(*args.courses)
    for line in found:
        print(line[:600])
    print(f"{totals}: {len(found)} differences")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
