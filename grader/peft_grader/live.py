"""The live check: one hidden test of a lab, run against the learner's own objects in their running kernel.

`labutils.check("test_bnb_config")` (the learner's front door, src/labutils/livecheck.py) calls `verdict`
here. It runs the master's whole test cell (the hidden part and the visible asserts) in the notebook's
namespace, as the graded run does, then, for a check the grader decides again from disk (a "files." check of the lab's OUTSIDE),
that on-disk check too, so the verdict and its message are the ones the graded run would give. Nothing is
recorded and no notebook is run again: grading still executes the whole submission in the sandbox.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from labutils.errors import CourseError
from peft_grader.nbcourse import GRADER, SOURCE, labs, master_notebook
from peft_grader.scores import MESSAGE_CHARS

CHECKS = GRADER / "checks"


@dataclass
class Verdict:
    lab: str
    test: str
    points: float
    passed: bool
    message: str  # as the graded run words it: "PeftMistake: [Mistake 3: ...] ... Fix: ..."; "" for a pass
    seconds: float


def installed() -> str:
    """'' when the hidden checks and the masters are here, else a one-line reason."""
    if not (CHECKS / "__init__.py").is_file() or not SOURCE.is_dir():
        return "the hidden checks are not installed here (a class copy, or Colab without the course's grader)"
    return ""


def _test_cells(lab: str) -> dict[str, nbformat.NotebookNode]:
    return {
        c.metadata["nbgrader"]["grade_id"]: c
        for c in master_notebook(lab).cells
        if c.cell_type == "code"
        and c.metadata.get("nbgrader", {}).get("grade")
        and not c.metadata["nbgrader"].get("solution")
    }


def find_lab(test: str, session: str | None = None) -> str:
    """The lab of this test: the running notebook's (`__session__`, its path, set by Jupyter), else the one
    lab that has a test of that name."""
    names = labs()
    if session and (stem := Path(session).stem) in names:
        return stem
    having = [lab for lab in names if test in _test_cells(lab)]
    if len(having) == 1:
        return having[0]
    if not having:
        raise CourseError(
            f"no lab has a test named {test!r}. Fix: give the grade id of a test cell, e.g. 'test_bnb_config'."
        )
    raise CourseError(
        f"{test!r} is a test of several labs ({', '.join(having)}). Fix: labutils.check({test!r}, lab='{having[0]}')."
    )


def verdict(test: str, ns: dict, lab: str | None = None) -> Verdict:
    """Run one test cell of `lab` against the namespace `ns`, with the on-disk check where there is one."""
    lab = lab or find_lab(test, ns.get("__session__"))
    if lab not in labs():
        raise CourseError(f"no lab {lab!r}. Fix: one of {', '.join(labs())}.")
    cells = _test_cells(lab)
    if test not in cells:
        raise CourseError(f"lab {lab} has no test {test!r}. Fix: one of {', '.join(cells)}.")
    cell = cells[test]
    # The hidden test cells `from checks import ...`: the course's checks, first on the path as in the sandbox
    # (PYTHONPATH), so that no checks.py of the learner's stands in for them.
    if sys.path[:1] != [str(GRADER)]:
        sys.path.insert(0, str(GRADER))
    if (loaded := sys.modules.get("checks")) and not str(getattr(loaded, "__file__", "")).startswith(
        str(CHECKS)
    ):
        raise CourseError(
            f"this kernel imported another module named checks ({getattr(loaded, '__file__', None)}). "
            "Fix: rename it, restart the kernel and run the notebook again."
        )
    from IPython.utils.capture import capture_output

    started, message = time.perf_counter(), ""
    with capture_output(display=True):  # the records the checks publish for the grader, and their prints
        try:
            exec(compile(cell.source, f"<hidden test {test}>", "exec"), ns)  # noqa: S102 - the course's own test
        except Exception as err:  # noqa: BLE001 - any failure is the verdict, worded as the graded run words it
            message = (f"{type(err).__name__}: {err}" if str(err) else type(err).__name__)[:MESSAGE_CHARS]
        if not message:
            message = _on_disk(lab, test)
    points = float(cell.metadata["nbgrader"].get("points", 0))
    return Verdict(lab, test, points, not message, message, time.perf_counter() - started)


def _on_disk(lab: str, test: str) -> str:
    """The graded run's second verdict for a check it decides from the files (checks.outside), here, as
    peft_grader.pipeline words it."""
    from checks.outside import on_disk_verdict

    found = on_disk_verdict(lab, test)
    return f"[verified outside the notebook] {found}" if found else ""
