"""Every place in grader/checks that fails a learner is reached by a fast test that reads its message.

A pytest plugin (tests/conftest.py loads it). While the tests under tests/grader/checks run, it records each
PeftMistake the checks raise, at the line that raised it (a `fail(...)` call or a `raise PeftMistake(...)`),
and whether the test read its message (str(), as `verdict` and `pytest.raises(match=...)` do). When the
session ran the whole of tests/grader/checks and passed, it compares those lines with every failure the
checks' code can raise (found in its syntax tree) and fails the session on any that no test reached and read:
a rule of a hidden check that no fast test proves.

While writing tests for one lab, `FAILURE_SITES=lab04_qlora,adapter_files pytest tests/grader/checks/test_lab04_qlora.py`
lists the unreached failures under those parts of grader/checks, whatever ran (it only reports).
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKS = REPO / "grader" / "checks"
TESTS = REPO / "tests" / "grader" / "checks"

raised: dict[tuple[str, int], bool] = {}  # (file relative to grader/checks, line) -> its message was read
_state = {"deselected": False, "patched": set()}


def failure_sites() -> set[tuple[str, int]]:
    """Every line of grader/checks that raises a PeftMistake: each call of `fail` and `raise PeftMistake(...)`,
    except the one inside `fail` itself."""
    sites = set()
    for path in sorted(CHECKS.rglob("*.py")):
        tree = ast.parse(path.read_text())
        inside_fail = {
            line
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef) and f.name == "fail" and path.name == "__init__.py"
            for line in range(f.lineno, f.end_lineno + 1)
        }
        for node in ast.walk(tree):
            call = node.exc if isinstance(node, ast.Raise) else node
            if not isinstance(call, ast.Call):
                continue
            name = getattr(call.func, "id", getattr(call.func, "attr", ""))
            if (name == "fail" and isinstance(node, ast.Call)) or (
                name == "PeftMistake" and isinstance(node, ast.Raise)
            ):
                if call.lineno not in inside_fail:
                    sites.add((path.relative_to(CHECKS).as_posix(), call.lineno))
    return sites


def _site() -> tuple[str, int] | None:
    """Where the PeftMistake being made was raised: the caller of `fail`, or the `raise` itself."""
    frame = sys._getframe(2)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(CHECKS) and not (
            path.name == "__init__.py" and frame.f_code.co_name == "fail"
        ):
            return path.relative_to(CHECKS).as_posix(), frame.f_lineno
        frame = frame.f_back
    return None


def _watch(mistake: type) -> None:
    """Record where each instance of this PeftMistake class is made, and whether its message is read."""
    if id(mistake) in _state["patched"]:
        return
    _state["patched"].add(id(mistake))
    make, text = mistake.__init__, mistake.__str__

    def __init__(self, *args, **kwargs):
        make(self, *args, **kwargs)
        self._failure_site = _site()
        if self._failure_site is not None:
            raised.setdefault(self._failure_site, False)

    def __str__(self):
        site = getattr(self, "_failure_site", None)
        if site is not None:
            raised[site] = True
        return text(self)

    mistake.__init__, mistake.__str__ = __init__, __str__


def _in_checks_tests(item) -> bool:
    return Path(str(item.path)).is_relative_to(TESTS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    if _in_checks_tests(item) and (checks := sys.modules.get("checks")) is not None:
        if Path(getattr(checks, "__file__", "")).resolve().parent == CHECKS:
            _watch(checks.PeftMistake)
    yield


def pytest_deselected(items):
    if any(_in_checks_tests(item) for item in items):
        _state["deselected"] = True


def pytest_collection_finish(session):
    collected = {Path(str(item.path)).name for item in session.items if _in_checks_tests(item)}
    _state["whole"] = collected == {p.name for p in TESTS.glob("test_*.py")}


def unreached() -> list[str]:
    return [
        f"grader/checks/{file}:{line}"
        for file, line in sorted(failure_sites() - {s for s, read in raised.items() if read})
    ]


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if parts := os.environ.get("FAILURE_SITES"):
        prefixes = tuple(f"grader/checks/{p.strip()}" for p in parts.split(","))
        shown = [site for site in unreached() if site.startswith(prefixes)]
        reporter.write_line(f"\nunreached failures under {parts}: {len(shown)}")
        for site in shown:
            reporter.write_line(f"  {site}")
        return
    if exitstatus != 0 or _state["deselected"] or not _state.get("whole"):
        return
    missing = unreached()
    if missing:
        reporter.write_line(
            f"\n{len(missing)} failures of the hidden checks are not reached by a fast test that reads their "
            "message (tests/failure_sites.py); write a test in tests/grader/checks that makes each one:",
            red=True,
        )
        for site in missing:
            reporter.write_line(f"  {site}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
