"""Re-decide a lab's checks in a fresh process, outside the learner's kernel.

`python -m checks.outside LAB FOLDER` prints {grade_id: failure message or ""} as JSON. A learner
cell can monkeypatch anything inside its own kernel, but not what the kernel left behind, read here by
code the kernel never touched:
- the files on disk (ON_DISK), at the lab's own paths, not the learner's variables;
- the plain-data records that the test cells published into the autograded notebook (FROM_EVIDENCE,
  checks.evidence), judged by the same judge as in the kernel.
A check that crashes here, or finds no single record, gives its reason as "could not be verified": the
grader scores it 0.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

from checks import FROM_EVIDENCE, ON_DISK, PeftMistake, error_text, judges, lab_paths
from checks.evidence import records

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


def _function(target: str):
    module, function = target.rsplit(".", 1)
    return getattr(importlib.import_module(f"checks.{module}"), function)


def verdicts(lab: str, folder: Path) -> dict[str, str]:
    found, folder = {}, folder.resolve()
    if ON_DISK.get(lab):
        os.chdir(folder)
        for grade_id in ON_DISK[lab]:
            found[grade_id] = on_disk_verdict(lab, grade_id)
    from_evidence = FROM_EVIDENCE.get(lab, {})
    if from_evidence:
        cells = _test_cells(folder / f"{lab}.ipynb")
        for grade_id, record in from_evidence.items():
            found[grade_id] = _decide(
                lambda r=record, g=grade_id: _judge_record(r, cells, g),
                "run the notebook top to bottom without errors, then submit it again.",
            )
    return found


def on_disk_verdict(lab: str, grade_id: str) -> str:
    """The on-disk check of one test cell, on the lab's paths under the current folder (the notebook's)."""
    return _decide(
        lambda: _function(ON_DISK[lab][grade_id])(lab_paths(lab)),
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


def _judge_record(record: str, cells: dict | Exception, grade_id: str) -> None:
    """Judge the one record that the check's test cell published, with checks.judges.<record>."""
    if isinstance(cells, Exception):
        raise cells
    found = records(cells.get(grade_id, {}), record)
    if len(found) != 1:
        raise LookupError(f"the test cell holds {len(found)} records of its check, not one")
    getattr(judges, record)(found[0])


if __name__ == "__main__":
    if os.environ.get("PEFT_COURSE_NUMERICS"):
        from labutils.numerics import apply

        apply()
    print(json.dumps(verdicts(sys.argv[1], Path(sys.argv[2]))))
