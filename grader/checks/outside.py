"""Re-run a lab's on-disk checks in a fresh process, outside the learner's kernel.

`python -m checks.outside LAB FOLDER` prints {grade_id: failure message or ""} as JSON. A learner
cell can monkeypatch anything inside its own kernel, but not the files it left on disk, read here
by code the kernel never touched. The paths are the lab's own constants, not the learner's variables.
The checks use the standard library only, so this costs about a second per submission.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

from checks import ON_DISK, PeftMistake


def verdicts(lab: str, folder: Path) -> dict[str, str]:
    if lab not in ON_DISK:
        return {}
    paths, checks = ON_DISK[lab]
    os.chdir(folder)
    found = {}
    for grade_id, target in checks.items():
        module, function = target.rsplit(".", 1)
        check = getattr(importlib.import_module(f"checks.{module}"), function)
        try:
            check({key: Path(value) for key, value in paths.items()})
            found[grade_id] = ""
        except PeftMistake as err:
            found[grade_id] = str(err)
    return found


if __name__ == "__main__":
    print(json.dumps(verdicts(sys.argv[1], Path(sys.argv[2]))))
