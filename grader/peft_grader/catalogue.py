"""The mistake catalogue: wrong (and valid-but-different) learner answers that prove the hidden checks.

Each entry is a TOML file in grader/mistakes/<lab>/ naming the correction-guide mistake it commits,
the solution cells (by nbgrader grade_id) it replaces, and the exact score it must get. A submission
is the learner release with the reference solutions filled in, then the entry's cells swapped in.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from labutils.errors import CourseError
from peft_grader.nbcourse import GRADER, NOTEBOOKS, SOURCE

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

MISTAKES = GRADER / "mistakes"
_SOLUTION_MARKERS = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.MULTILINE)


@dataclass
class Entry:
    lab: str
    name: str
    title: str
    mistake: str  # "Mistake N" of the guide, a named rule, or "correct" for a valid variant
    score: float  # the exact score it must get
    cells: dict[str, str]  # grade_id -> replacement source
    failed: list[str] = field(default_factory=list)  # checks that must lose points
    message: str = ""  # text every failing check's message must contain

    @property
    def correct(self) -> bool:
        return self.mistake == "correct"


def entries(lab: str) -> list[Entry]:
    found = []
    for path in sorted((MISTAKES / lab).glob("*.toml")):
        data = tomllib.loads(path.read_text())
        try:
            found.append(
                Entry(
                    lab,
                    path.stem,
                    data["title"],
                    str(data["mistake"]),
                    float(data["score"]),
                    dict(data["cells"]),
                    list(data.get("failed", [])),
                    data.get("message", ""),
                )
            )
        except KeyError as err:
            raise CourseError(f"{path}: missing key {err}") from None
    return found


def _solutions(lab: str) -> dict[str, str]:
    import nbformat

    master = nbformat.read(SOURCE / lab / f"{lab}.ipynb", as_version=4)
    return {
        c.metadata["nbgrader"]["grade_id"]: _SOLUTION_MARKERS.sub("", c.source)
        for c in master.cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }


def submission(lab: str, cells: dict[str, str] | None = None, release_dir: Path = NOTEBOOKS):
    """The released notebook with the reference solutions, then `cells` swapped in by grade_id."""
    import nbformat

    nb = nbformat.read(Path(release_dir) / f"{lab}.ipynb", as_version=4)
    answers = _solutions(lab) | (cells or {})
    unknown = set(cells or {}) - set(_solutions(lab))
    if unknown:
        raise CourseError(f"{lab}: no solution cell with grade_id {sorted(unknown)}")
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell.source = answers[gid]
    return nb


def write_class(
    folder: Path, labs: list[str], release_dir: Path = NOTEBOOKS, sample: bool = False
) -> dict[str, Entry | None]:
    """A class: 'reference' plus one student per catalogue entry, as <student>/<lab>.ipynb.

    With `sample`, a smaller class for a demonstration: per lab one wrong entry and one correct variant.
    """
    import nbformat

    students: dict[str, Entry | None] = {}
    for lab in labs:
        chosen = entries(lab)
        if sample:
            chosen = [e for kind in (False, True) for e in [e for e in chosen if e.correct == kind][:1]]
        for student, entry in [("reference", None), *((f"{e.lab}--{e.name}", e) for e in chosen)]:
            nb = submission(lab, entry.cells if entry else None, release_dir)
            target = Path(folder) / student / f"{lab}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, target)
            students[student] = entry
    return students


def unexpected(results, students: dict[str, Entry | None]) -> list[str]:
    """Every way a graded sample class differs from what the catalogue promises (empty = all proven).

    The reference and each correct variant must score full marks; each wrong entry must score exactly
    its points, lose them on exactly its listed checks, and explain every lost point in a message
    that names the fix (and contains the entry's `message` text, where it gives one). No entry is held for
    review: they are all honest work.
    """
    problems = []
    for r in results:
        if r.student not in students:
            continue
        entry = students[r.student]
        if entry is not None and r.lab != entry.lab:
            continue  # a catalogue student submits one lab; the others are missing by design
        want = r.max_score if entry is None or entry.correct else entry.score
        who = f"{r.student} ({r.lab})"
        if r.reason:
            problems.append(f"{who}: not graded: {r.reason}")
            continue
        if r.held:  # honest work, right or wrong, in any style: never held for review
            problems.append(f"{who}: held for review: {'; '.join(r.held)}")
        if r.score != want:
            problems.append(f"{who}: scored {r.score:g}, expected {want:g}")
        lost = {c.name for c in r.checks if c.score < c.max_score}
        expected_lost = set(entry.failed) if entry and not entry.correct else set()
        if lost != expected_lost:
            problems.append(f"{who}: lost points on {sorted(lost)}, expected {sorted(expected_lost)}")
        for c in r.checks:
            if c.score < c.max_score and "Fix:" not in c.message:
                problems.append(
                    f"{who}: {c.name} lost points without a message naming the fix: {c.message!r}"
                )
        if entry and entry.message and not any(entry.message in c.message for c in r.checks):
            problems.append(f"{who}: no message mentions {entry.message!r}")
    return problems
