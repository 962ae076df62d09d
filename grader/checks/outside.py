"""Re-run a lab's on-disk checks in a fresh process, outside the learner's kernel.

`python -m checks.outside LAB FOLDER` prints {grade_id: failure message or ""} as JSON. A learner
cell can monkeypatch anything inside its own kernel, but not the files it left on disk, read here
by code the kernel never touched. The paths are the lab's own constants, not the learner's variables.
A check that crashes here gives its reason as "could not be verified": the grader scores it 0.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

from checks import ON_DISK, PeftMistake

UNVERIFIED = "could not be verified outside the notebook"


def verdicts(lab: str, folder: Path) -> dict[str, str]:
    if lab not in ON_DISK:
        return {}
    paths, checks = ON_DISK[lab]
    os.chdir(folder)
    found = {}
    for grade_id, target in checks.items():
        module, function = target.rsplit(".", 1)
        try:
            check = getattr(importlib.import_module(f"checks.{module}"), function)
            check({key: Path(value) for key, value in paths.items()})
            found[grade_id] = ""
        except PeftMistake as err:
            found[grade_id] = str(err)
        except Exception as err:  # noqa: BLE001 - fail closed: an unverifiable check does not pass
            found[grade_id] = (
                f"{UNVERIFIED} ({type(err).__name__}: {str(err)[:300]}). Fix: save what the exercise asks "
                "for, in the folder it names, with save_pretrained; then run the notebook again."
            )
    return found


if __name__ == "__main__":
    if os.environ.get("PEFT_COURSE_NUMERICS"):
        from labutils.numerics import apply

        apply()
    print(json.dumps(verdicts(sys.argv[1], Path(sys.argv[2]))))
