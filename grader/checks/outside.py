"""Re-run a lab's on-disk checks in a fresh process, outside the learner's kernel.

`python -m checks.outside LAB FOLDER` prints {grade_id: failure message or ""} as JSON. A learner
cell can monkeypatch anything inside its own kernel, but not the files it left on disk, read here
by code the kernel never touched. The paths are the lab's own constants, not the learner's variables.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

from checks import LAB_MODULES, PeftMistake


def verdicts(lab: str, folder: Path) -> dict[str, str]:
    module = importlib.import_module(f"checks.{LAB_MODULES[lab]}")
    os.chdir(folder)
    namespace = {name: Path(value) for name, value in module.OUTSIDE_PATHS.items()}
    found = {}
    for grade_id, check in module.OUTSIDE_CHECKS.items():
        try:
            check(dict(namespace))
            found[grade_id] = ""
        except PeftMistake as err:
            found[grade_id] = str(err)
    return found


if __name__ == "__main__":
    print(json.dumps(verdicts(sys.argv[1], Path(sys.argv[2]))))
