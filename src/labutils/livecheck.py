"""The live check's front door: `labutils.check("test_bnb_config")` in a lab notebook.

It runs that exercise's hidden check against the objects in the running kernel and prints the verdict
the graded run would give: the mistake and its fix, never a traceback. The checks live in the
instructor's house (grader/), found at run time (labutils never imports the grader otherwise): where
they are not installed it says so in one line and does nothing else. It never replaces grading, and
inside a graded run (nbgrader autograde or validate, a grading sandbox's kernel) it does nothing, since the grader runs every
hidden check itself.
"""

from __future__ import annotations

import os
import sys
import textwrap

from labutils.errors import CourseError

MIME = "application/vnd.peft-course.live-check+json"  # the verdict as data, beside its text
WIDTH = 100


def _namespace(depth: int = 2) -> dict:
    """The notebook's namespace: IPython's, else the caller's globals (a script)."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    return shell.user_ns if shell is not None else sys._getframe(depth).f_globals


def _show(text: str, data: dict | None = None) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        print(text)
        return
    if get_ipython() is None or data is None:
        print(text)
    else:
        display({MIME: data, "text/plain": text}, raw=True)


def check(test: str, lab: str | None = None) -> None:
    """Run the hidden check of test cell `test` (its grade id) against this notebook's live objects, and
    print its verdict. `lab` is found from the notebook, or from the test's name where only one lab has it."""
    if os.environ.get("NBGRADER_EXECUTION") or os.environ.get(
        "NBGRADER_SANDBOX"
    ):  # nbgrader's, the sandbox's
        print(f"labutils.check({test!r}): skipped while grading; the grader runs every hidden check itself.")
        return
    try:
        from peft_grader import live
    except ImportError:
        print("labutils.check: the hidden checks are not installed here; the visible tests above still run.")
        return
    if why := live.installed():
        print(f"labutils.check: {why}; the visible tests above still run.")
        return
    try:
        found = live.verdict(test, _namespace(), lab)
    except CourseError as err:
        print(f"labutils.check({test!r}): {err}")
        return
    except Exception as err:  # noqa: BLE001 - the learner's failures are verdicts; this is the check's own machinery
        print(
            f"labutils.check({test!r}): the check could not run here ({type(err).__name__}: {err}). "
            f"Fix: run the notebook from the top; `labutils check` runs it again with every check."
        )
        return
    points = f"{found.points:g} point{'s' if found.points != 1 else ''}"
    if found.passed:
        text = f"✓ {found.test} ({found.lab}): passes its hidden check, {points} ({found.seconds:.1f} s)"
    else:
        message = found.message.removeprefix("PeftMistake: ")
        body = textwrap.fill(message, WIDTH, initial_indent="  ", subsequent_indent="  ")
        text = f"✗ {found.test} ({found.lab}): 0 of {points} ({found.seconds:.1f} s)\n{body}"
    _show(
        text,
        {
            "lab": found.lab,
            "test": found.test,
            "passed": found.passed,
            "message": found.message,
            "points": found.points,
            "seconds": found.seconds,
        },
    )
