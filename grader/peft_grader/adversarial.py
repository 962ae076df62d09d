"""The adversarial catalogue: hostile and broken submissions that prove grading is robust.

Beside the mistake catalogue (which proves the hidden checks), each entry in
grader/adversarial/<lab>/<name>.toml is a submission that raises, loops, crashes its kernel, floods
its output, mangles the notebook, tampers with the checks or the grader, reaches outside its folder, or
leaves processes, threads, changed modules or files behind for the next submission; and the exact score
its honest work deserves, with the reason the summary must show when it cannot be graded normally. A submission is the mistake catalogue's reference submission (the
learner release with the reference solutions) with the entry's mutations applied, in this order:

- `[cells]`: grade_id -> new source, for any cell with a grade_id (locked and test cells too);
- `[metadata.<grade_id>]`: keys merged into that cell's nbgrader metadata;
- `points = {grade_id = n}`: a tampered `points` value;
- `retype = [...]`: code <-> markdown;
- `duplicate = [...]`: a copy right after the cell, nbgrader metadata and all;
- `[[insert]]`: learner cells (`after` a grade_id, `source`, optional `cell_type`), no nbgrader metadata;
- `delete = [...]`, then `move_to_end = [...]` (the last cell with that grade_id);
- or instead of a notebook: `raw = "..."` (the file's text), `missing = true` (no file at all),
  `nbformat = 3` (the submission written as nbformat v3), `foreign = true` (a valid notebook of
  another lab, whose nbgrader cells carry grade_ids this lab does not have).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from labutils.errors import CourseError
from peft_grader.catalogue import submission, tomllib  # tomllib, or tomli on Python 3.10
from peft_grader.nbcourse import GRADER, NOTEBOOKS, SOURCE

ADVERSARIAL = GRADER / "adversarial"
THREATS = {
    "control",  # an honest submission graded in the same batch as the hostile ones
    "raises",
    "loop",
    "kernel",
    "memory",
    "output",
    "cells",
    "metadata",
    "file",
    "tamper",
    "fake",
    "filesystem",
    "network",
    "slow",
    "residue",  # what a submission leaves behind for the next one graded by the same worker
    # hiding a mistake from the checks (issue 29's families): IPython's extension points, traces and audit
    # hooks, code no review read, frames, a name rebound, measurements edited, files rewritten after a check
    "extension_points",
    "hooks",
    "unreviewed_code",
    "frames",
    "rebound",
    "measurements",
    "files_after_check",
    # lab 07: an adapter that is not the one the lab's Trainer trained from an untrained start (issue 30)
    "provenance",
}
_KEYS = {
    "title",
    "message",
    "held",
    "threat",
    "score",
    "reason",
    "failed",
    "cells",
    "metadata",
    "points",
    "retype",
    "duplicate",
    "insert",
    "delete",
    "move_to_end",
    "raw",
    "missing",
    "nbformat",
    "foreign",
}


@dataclass
class Insert:
    after: str  # grade_id of the cell the new learner cell follows
    source: str
    cell_type: str = "code"


@dataclass
class AdversarialEntry:
    lab: str
    name: str
    title: str
    threat: str  # one of THREATS
    score: float  # the exact score its honest work deserves
    reason: str = ""  # text the student's reason must contain; "" = graded normally, no reason
    failed: list[str] = field(default_factory=list)  # checks that must lose points (when given)
    cells: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, dict] = field(default_factory=dict)
    points: dict[str, float] = field(default_factory=dict)
    retype: list[str] = field(default_factory=list)
    duplicate: list[str] = field(default_factory=list)
    insert: list[Insert] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    move_to_end: list[str] = field(default_factory=list)
    raw: str | None = None
    missing: bool = False
    nbformat: int = 4
    foreign: bool = False
    message: str = ""  # text one of its lost points' messages must contain (where given)
    held: list[str] = field(
        default_factory=list
    )  # texts its held-for-review evidence must contain; [] = not held

    @property
    def student(self) -> str:
        return f"{self.lab}--adv--{self.name}"


def entries(lab: str) -> list[AdversarialEntry]:
    found = []
    for path in sorted((ADVERSARIAL / lab).glob("*.toml")):
        data = tomllib.loads(path.read_text())
        unknown = set(data) - _KEYS
        if unknown:
            raise CourseError(f"{path}: unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
        try:
            entry = AdversarialEntry(
                lab,
                path.stem,
                data["title"],
                data["threat"],
                float(data["score"]),
                data.get("reason", ""),
                list(data.get("failed", [])),
                dict(data.get("cells", {})),
                {gid: dict(meta) for gid, meta in data.get("metadata", {}).items()},
                dict(data.get("points", {})),
                list(data.get("retype", [])),
                list(data.get("duplicate", [])),
                [Insert(i["after"], i["source"], i.get("cell_type", "code")) for i in data.get("insert", [])],
                list(data.get("delete", [])),
                list(data.get("move_to_end", [])),
                data.get("raw"),
                bool(data.get("missing", False)),
                int(data.get("nbformat", 4)),
                bool(data.get("foreign", False)),
                data.get("message", ""),
                list(data.get("held", [])),
            )
        except KeyError as err:
            raise CourseError(f"{path}: missing key {err}") from None
        if entry.threat not in THREATS:
            raise CourseError(f"{path}: threat {entry.threat!r} is not one of {sorted(THREATS)}")
        found.append(entry)
    return found


def max_points(lab: str) -> dict[str, float]:
    """grade_id -> points of every graded cell in the lab's master (what tampering must not change)."""
    import nbformat

    master = nbformat.read(SOURCE / lab / f"{lab}.ipynb", as_version=4)
    return {
        c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"].get("points", 0))
        for c in master.cells
        if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"  # autograded cells
    }


# ---------------------------------------------------------------- building submissions
def _gid(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _index(cells: list, grade_id: str, entry: AdversarialEntry, last: bool = False) -> int:
    hits = [i for i, c in enumerate(cells) if _gid(c) == grade_id]
    if not hits:
        raise CourseError(f"{entry.lab}/{entry.name}: no cell with grade_id {grade_id!r}")
    return hits[-1] if last else hits[0]


def _retype(cell) -> None:
    if cell.cell_type == "code":
        cell.cell_type = "markdown"
        cell.pop("outputs", None)
        cell.pop("execution_count", None)
    else:
        cell.cell_type = "code"
        cell.pop("attachments", None)  # markdown only
        cell.outputs = []
        cell.execution_count = None


def _foreign(lab: str) -> bytes:
    """A valid notebook of a lab that is not `lab`: nbgrader cells whose grade_ids it does not have."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    def meta(grade_id: str, **flags) -> dict:
        base = {"grade": False, "locked": True, "solution": False, "schema_version": 3, "task": False}
        return {"nbgrader": base | {"grade_id": grade_id} | flags}

    cells = [
        new_markdown_cell("# Lab 03 · Rank and alpha\n\nSweep the LoRA rank.", metadata=meta("lab03_intro")),
        new_code_cell(
            "ranks = [4, 8, 16, 32]\nchosen_rank = 16", metadata=meta("lab03_sweep", solution=True)
        ),
        new_code_cell(
            "assert chosen_rank in (8, 16)", metadata=meta("lab03_test_rank", grade=True, points=5)
        ),
    ]
    for i, cell in enumerate(cells):
        cell.id = f"lab03-{i}"
    nb = new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
    )
    return nbformat.writes(nb).encode()


def notebook(entry: AdversarialEntry, release_dir: Path = NOTEBOOKS):
    """The entry's submission as a v4 notebook node (for entries that are a notebook of this lab)."""
    from nbformat.v4 import new_code_cell, new_markdown_cell

    nb = submission(entry.lab, release_dir=release_dir)
    cells = nb.cells
    for gid, source in entry.cells.items():
        cells[_index(cells, gid, entry)].source = source
    for gid, meta in entry.metadata.items():
        cells[_index(cells, gid, entry)].metadata.setdefault("nbgrader", {}).update(meta)
    for gid, value in entry.points.items():
        cells[_index(cells, gid, entry)].metadata["nbgrader"]["points"] = value
    for gid in entry.retype:
        _retype(cells[_index(cells, gid, entry)])
    for gid in entry.duplicate:
        i = _index(cells, gid, entry)
        twin = copy.deepcopy(cells[i])
        twin.id = f"{cells[i].id}-copy"  # nbformat 4.5 cell ids must stay unique
        cells.insert(i + 1, twin)
    placed: dict[str, object] = {}  # the last cell inserted after each anchor: later ones follow it
    for n, ins in enumerate(entry.insert):
        make = {"code": new_code_cell, "markdown": new_markdown_cell}.get(ins.cell_type)
        if make is None:
            raise CourseError(
                f"{entry.lab}/{entry.name}: cell_type {ins.cell_type!r} is not code or markdown"
            )
        new = make(ins.source)
        new.id = f"adv-{n}"
        previous = placed.get(ins.after)
        if previous is None:
            after = _index(cells, ins.after, entry, last=True)
        else:
            after = next(i for i, c in enumerate(cells) if c is previous)
        cells.insert(after + 1, new)
        placed[ins.after] = new
    for gid in entry.delete:
        cells.pop(_index(cells, gid, entry))
        while any(_gid(c) == gid for c in cells):  # a duplicated cell goes with its twin
            cells.pop(_index(cells, gid, entry))
    for gid in entry.move_to_end:
        cells.append(cells.pop(_index(cells, gid, entry, last=True)))
    return nb


def build(entry: AdversarialEntry, release_dir: Path = NOTEBOOKS) -> bytes | None:
    """The submission file's bytes, or None where the student submitted no file at all."""
    import nbformat

    if entry.missing:
        return None
    if entry.raw is not None:
        return entry.raw.encode()
    if entry.foreign:
        return _foreign(entry.lab)
    nb = notebook(entry, release_dir)
    if entry.nbformat == 3:
        return nbformat.writes(nbformat.convert(nb, 3), version=3).encode()
    if entry.nbformat != 4:
        raise CourseError(f"{entry.lab}/{entry.name}: nbformat must be 3 or 4, not {entry.nbformat}")
    return nbformat.writes(nb).encode()


def write_class(folder: Path, labs: list[str], release_dir: Path = NOTEBOOKS) -> dict[str, AdversarialEntry]:
    """One student per entry, <folder>/<lab>--adv--<name>/<lab>.ipynb (a missing one: an empty folder)."""
    students = {}
    for lab in labs:
        for entry in entries(lab):
            target = Path(folder) / entry.student / f"{lab}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            data = build(entry, release_dir)
            if data is not None:
                target.write_bytes(data)
            students[entry.student] = entry
    return students


# ---------------------------------------------------------------- checking a graded class
def unexpected(results, students: dict[str, AdversarialEntry]) -> list[str]:
    """Every way a graded adversarial class differs from what the catalogue promises (empty = robust).

    Each student has exactly one result for its lab, with exactly its score out of the lab's full
    points (tampered points metadata changes nothing); a reason containing the entry's reason, or no
    reason where the entry gives none; and, where the entry lists them, loses points on exactly
    its `failed` checks, one of them with a message containing the entry's `message`; held for review with
    evidence naming each of its `held` texts, or not held at all where it gives none.
    """
    problems = []
    seen: dict[str, int] = {}
    points = {lab: max_points(lab) for lab in {e.lab for e in students.values()}}
    for r in results:
        entry = students.get(r.student)
        if entry is None or r.lab != entry.lab:
            continue
        seen[r.student] = seen.get(r.student, 0) + 1
        who = f"{r.student} ({entry.threat})"
        lab_points = points[entry.lab]
        if r.score != entry.score:
            problems.append(f"{who}: scored {r.score:g}, expected {entry.score:g} (reason: {r.reason!r})")
        if r.max_score != sum(lab_points.values()):
            problems.append(f"{who}: out of {r.max_score:g}, expected {sum(lab_points.values()):g}")
        if entry.reason and entry.reason not in r.reason:
            problems.append(f"{who}: reason {r.reason!r} does not mention {entry.reason!r}")
        if not entry.reason and r.reason:
            problems.append(f"{who}: not graded normally: {r.reason}")
        for c in r.checks:
            if c.name in lab_points and c.max_score != lab_points[c.name]:
                problems.append(f"{who}: {c.name} is out of {c.max_score:g}, expected {lab_points[c.name]:g}")
        if entry.failed:
            lost = {c.name for c in r.checks if c.score < c.max_score}
            if lost != set(entry.failed):
                problems.append(f"{who}: lost points on {sorted(lost)}, expected {sorted(entry.failed)}")
        if entry.message and not any(entry.message in c.message for c in r.checks if c.score < c.max_score):
            problems.append(f"{who}: no lost point's message mentions {entry.message!r}")
        missing = [text for text in entry.held if not any(text in h for h in r.held)]
        if missing or (r.held and not entry.held):
            problems.append(f"{who}: held {r.held}, expected evidence mentioning {entry.held}")
    for student in students:
        if seen.get(student, 0) != 1:
            problems.append(f"{student}: {seen.get(student, 0)} results, expected exactly 1")
    return problems


PROBE = "adv-probe-*"  # the name of every file the filesystem entries try to write where they must not


def escaped_probes(course: Path) -> list[Path]:
    """Probe files the filesystem entries left outside their own folders (empty when the sandbox held)."""
    from labutils.models import cache_dir
    from peft_grader.nbcourse import REPO

    found = [p for folder in ("grader", "notebooks", "src") for p in (REPO / folder).rglob(PROBE)]
    for folder in (cache_dir(), Path("/tmp"), Path("/dev/shm"), Path.home(), course, course / "release"):
        if folder.is_dir():
            found += list(folder.glob(PROBE)) + list(folder.glob(f"*/{PROBE}"))
    return sorted(set(found))
