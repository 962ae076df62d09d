"""Re-decide a lab's checks in a fresh process, outside the learner's kernel.

`python -m checks.outside LAB FOLDER [VIEWS]` prints {grade_id: failure message or ""} as JSON for each test cell in
the lab's OUTSIDE (checks.outside_targets). A learner cell can monkeypatch anything inside its own kernel,
but not what the kernel left behind, read here by code the kernel never touched:
- "files.NAME": the files on disk, at the lab's own paths, not the learner's variables;
- "judges.NAME": the plain-data record that the test cell published into the autograded notebook
  (checks.evidence), judged by the same judge as in the kernel.
A check that crashes here, or finds no single record, gives its reason as "could not be verified": the
grader scores it 0.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

from checks import PeftMistake, error_text, evidence, lab_package, lab_paths, lab_registry, outside_targets
from checks.evidence import RECORDED_KEY, records

UNVERIFIED = "could not be verified outside the notebook"


def _unverified(err: Exception, fix: str) -> str:
    return f"{UNVERIFIED} ({type(err).__name__}: {error_text(err)[:300]}). Fix: {fix}"


def _decide(check, fix: str) -> str:
    """The verdict of `check()`: "" for a pass, the mistake's message, or why it could not be verified."""
    try:
        check()
        return ""
    except PeftMistake as err:
        return error_text(err)
    except Exception as err:  # noqa: BLE001 - fail closed: an unverifiable check does not pass
        return _unverified(err, fix)


def _function(lab: str, target: str):
    """The function a lab's OUTSIDE names: "judges.NAME" or "files.NAME" of the lab's package."""
    module, name = target.split(".")
    return getattr(importlib.import_module(f"{lab_package(lab)}.{module}"), name)


def verdicts(lab: str, folder: Path, views: Path | None = None) -> dict[str, str]:
    """Every outside verdict of the lab's notebook in `folder`. `views`: the lab's files as each check saw them
    (peft_grader.as_made: a folder per grade id), judged instead of the files as they are now."""
    targets, found, folder = outside_targets(lab), {}, folder.resolve()
    cells = _test_cells(folder / f"{lab}.ipynb")
    # the files checks of a lab with records judge the files against what its locked cells recorded
    evidence.notebook_records = {
        grade_id: cell.get("metadata", {}).get(RECORDED_KEY, {})
        for grade_id, cell in ({} if isinstance(cells, Exception) else cells).items()
    }
    for grade_id, target in targets.items():
        if target.startswith("files."):
            # as the check first saw the files (a file rewritten after it cannot change a verdict), and as the
            # notebook left them (a mistake made after the check still counts)
            view = views / grade_id if views is not None else None
            verdict = ""
            for place in [view, folder] if view is not None and view.is_dir() else [folder]:
                os.chdir(place)
                if verdict := on_disk_verdict(lab, grade_id):
                    break
            found[grade_id] = verdict
        else:
            found[grade_id] = _decide(
                lambda t=target, g=grade_id: _judge_record(lab, t, cells, g),
                "run the notebook top to bottom without errors, then submit it again.",
            )
    return found


def on_disk_verdict(lab: str, grade_id: str) -> str:
    """The on-disk check of one test cell, on the lab's paths under the current folder (the notebook's); ""
    where the cell has none."""
    target = outside_targets(lab).get(grade_id, "")
    if not target.startswith("files."):
        return ""
    return _decide(
        lambda: _function(lab, target)(lab_paths(lab)),
        "save what the exercise asks for, in the folder it names, with save_pretrained; then run the "
        "notebook again.",
    )


def _test_cells(notebook: Path) -> dict | Exception:
    """The notebook's cells by grade id, or why they could not be read (each check then fails closed)."""
    try:
        cells = json.loads(notebook.read_text())["cells"]
        return {cell.get("metadata", {}).get("nbgrader", {}).get("grade_id"): cell for cell in cells}
    except Exception as err:  # noqa: BLE001 - reported per check, as "could not be verified"
        return err


def _judge_record(lab: str, target: str, cells: dict | Exception, grade_id: str) -> None:
    """Judge the one record that the check's test cell published (named as its judge) with that judge; then,
    where the lab judges that cell on what a locked cell recorded (FROM_RECORDS), that record too: a verdict
    about the model that did the work, or the measurements as they were measured."""
    if isinstance(cells, Exception):
        raise cells
    found = records(cells.get(grade_id, {}), target.removeprefix("judges."))
    if len(found) != 1:
        raise LookupError(f"the test cell holds {len(found)} records of its check, not one")
    judge = _function(lab, target)
    judge(found[0])
    if source := lab_registry(lab, "FROM_RECORDS").get(grade_id):
        cell, name, key = source
        value = cells.get(cell, {}).get("metadata", {}).get(RECORDED_KEY, {}).get(name)
        if value is None or value.get("restarted"):
            return  # that cell never ran, or ran in a kernel restarted after a crash (the reason says so)
        if "unrecorded" in value:
            raise LookupError(f"the locked cell {cell} recorded no {name} ({value['unrecorded']})")
        try:
            judge(value if key is None else found[0] | {key: value})
        except PeftMistake as err:
            raise PeftMistake(
                f"{err} (judged on what the notebook's cell {cell} did the work with)"
            ) from None


if __name__ == "__main__":
    if os.environ.get("PEFT_COURSE_NUMERICS"):
        from peft_grader.numerics import apply

        apply()
    views = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    print(json.dumps(verdicts(sys.argv[1], Path(sys.argv[2]), views)))
