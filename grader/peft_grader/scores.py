"""Results and the gradebook: what one submission scored, read from nbgrader's gradebook and the
autograded notebook, merged into the class gradebook and saved as JSON as soon as it is known.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from peft_grader.nbcourse import gradebook

MESSAGE_CHARS = 1000  # a whole check message (they name the mistake, then the fix), not a traceback


@dataclass
class CheckResult:
    name: str
    score: float
    max_score: float
    message: str = ""


@dataclass
class LabResult:
    student: str
    lab: str
    score: float = 0.0
    max_score: float = 0.0
    reason: str = ""  # why there is no (full) autograde, e.g. a missing or unreadable submission
    manual_points: float = 0.0  # points of markdown answers an instructor grades in formgrader
    checks: list[CheckResult] = field(default_factory=list)
    review: str = ""  # what an instructor may want to look at; it cost no points (e.g. a %run magic)
    # held for review: each use of a capability no exercise needs ("cell NAME line N: what"), and files changed
    # after their check; graded all the same, and the autograded cells wait for an instructor in formgrader
    held: list[str] = field(default_factory=list)
    digest: str = ""  # sha256 of the graded file: an unchanged submission is not graded twice
    seconds: float = 0.0  # wall time of this submission's grading (sandbox, autograde, outside checks)


def load_result(path: Path) -> LabResult:
    data = json.loads(path.read_text())
    return LabResult(**{**data, "checks": [CheckResult(**c) for c in data["checks"]]})


def check_messages(autograded: Path) -> dict[str, str]:
    """The error message of each failing graded cell in an autograded notebook."""

    nb = nbformat.read(autograded, as_version=4)
    found = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if not meta.get("grade") or cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                text = (
                    f"{out.get('ename')}: {out.get('evalue')}" if out.get("evalue") else out.get("ename", "")
                )
                found[meta["grade_id"]] = text[:MESSAGE_CHARS]
    return found


def errors_named(autograded: Path, ename: str) -> list[str]:
    """Cells (by grade_id, else position) that ended in this error, e.g. the sandbox's KernelRestarted."""
    nb = nbformat.read(autograded, as_version=4)
    return [
        cell.metadata.get("nbgrader", {}).get("grade_id") or f"#{i + 1}"
        for i, cell in enumerate(nb.cells)
        if any(o.get("ename") == ename for o in cell.get("outputs", []))
    ]


def cell_seconds(notebook: Path) -> dict[str, float]:
    """Wall seconds of each executed cell (grade_id, else #position), from nbclient's timing metadata."""
    from datetime import datetime

    def moment(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    found = {}
    for i, cell in enumerate(nbformat.read(notebook, as_version=4).cells):
        timing = cell.metadata.get("execution", {})
        if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            name = cell.metadata.get("nbgrader", {}).get("grade_id") or f"#{i + 1}"
            found[name] = (
                moment(timing["shell.execute_reply"]) - moment(timing["iopub.execute_input"])
            ).total_seconds()
    return found


def nearest_timeout(notebook: Path, lab: str, timeout: int) -> tuple[str, float, int]:
    """The executed cell that came nearest its timeout: (name, seconds, that cell's timeout), where a cell's
    timeout is the course's or the longer one the lab's master declares for it (preprocessors.declared_timeouts)."""
    from peft_grader.nbcourse import SOURCE
    from peft_grader.preprocessors import declared_timeouts

    declared = declared_timeouts(nbformat.read(SOURCE / lab / f"{lab}.ipynb", as_version=4))
    seconds = cell_seconds(notebook)
    limits = {name: max(timeout, declared.get(name, 0)) for name in seconds}
    name = max(seconds, key=lambda n: seconds[n] / limits[n])
    return name, seconds[name], limits[name]


def read_gradebook(course: Path, lab: str, student: str, result: LabResult) -> None:
    """The autograded cells' scores; markdown answer cells wait for manual grading in formgrader."""
    from nbgrader.api import MissingEntry

    with gradebook(course) as gb:
        try:
            sub = gb.find_submission(lab, student)
        except MissingEntry:
            return
        grades = [g for nb in sub.notebooks for g in sorted(nb.grades, key=lambda g: g.name)]
        result.checks = [
            CheckResult(g.name, g.score or 0.0, g.max_score) for g in grades if g.cell.cell_type == "code"
        ]
        result.score = sum(c.score for c in result.checks)


def lab_points(course: Path, lab: str) -> tuple[float, float]:
    """The lab's autograded points and its manually graded points."""
    with gradebook(course) as gb:
        cells = [
            (c.cell_type, c.max_score) for nb in gb.find_assignment(lab).notebooks for c in nb.grade_cells
        ]
    auto = sum(points for kind, points in cells if kind == "code")
    return auto, sum(points for _, points in cells) - auto


def merge(course: Path, result: LabResult, scratch: Path) -> None:
    """Copy one student's autograded work and scores into the class gradebook (the trusted side)."""
    from nbgrader.api import MissingEntry

    autograded = scratch / "autograded" / result.student / result.lab
    if autograded.exists():
        target = course / "autograded" / result.student / result.lab
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(autograded, target, ignore=shutil.ignore_patterns(".sandbox"))
    submitted = scratch / "submitted" / result.student / result.lab
    if submitted.exists():
        shutil.copytree(submitted, course / "submitted" / result.student / result.lab, dirs_exist_ok=True)
    with gradebook(course) as gb, warnings.catch_warnings():
        # nbgrader 0.9.6's remove_submission trips SQLAlchemy's autoflush warnings: noise, not data loss
        warnings.simplefilter("ignore")
        gb.update_or_create_student(result.student)
        try:
            gb.remove_submission(result.lab, result.student)
        except MissingEntry:
            pass
        gb.add_submission(result.lab, result.student)
        for check in result.checks:
            grade = gb.find_grade(check.name, result.lab, result.lab, result.student)
            grade.auto_score = check.score
            # nbgrader creates every grade as needing a hand (its column's default): an autograded check does
            # only when the submission is held, and then formgrader and `nbgrader export` list it as waiting
            grade.needs_manual_grade = bool(result.held)
        gb.db.commit()


def ensure_students(course: Path, students: list[str]) -> None:
    with gradebook(course) as gb:
        for student in students:
            gb.update_or_create_student(student)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
