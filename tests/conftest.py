"""Shared fixtures: a per-session tiny-model cache (unless CI provides one) and one graded sample class."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from labutils.models import CACHE_VAR

pytest_plugins = ["failure_sites"]  # every failure of the hidden checks is proven by a fast test


@pytest.fixture(scope="session", autouse=True)
def _course_cache(tmp_path_factory):
    """Never build into ~/.cache during tests; an exported PEFT_COURSE_CACHE (CI's shared cache) wins."""
    if os.environ.get(CACHE_VAR):
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_VAR, str(tmp_path_factory.mktemp("peft-course-cache")))
        yield


@pytest.fixture
def tiny_cache(tmp_path, monkeypatch) -> Path:
    """An empty model cache for one test, for checks that must see a build happen."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_VAR, str(cache))
    return cache


@dataclass
class GradedClass:
    course: Path  # the class's nbgrader course folder: gradebook, feedback, grades.csv
    mistakes: dict  # student -> mistake-catalogue entry (None for the reference)
    hostile: dict  # student -> adversarial-catalogue entry
    results: list  # scores.LabResult for every student and lab
    timeout: int  # the per-cell timeout it was graded with


@pytest.fixture
def hidden_check(monkeypatch):
    """Imports a module of grader/checks the way the hidden test cells do (`from checks import ...`)."""
    from peft_grader import nbcourse

    monkeypatch.syspath_prepend(str(nbcourse.GRADER))
    return lambda name: importlib.import_module(f"checks.{name}")


@pytest.fixture
def verdict(hidden_check):
    """verdict(check, arg) -> the PeftMistake message `check(arg)` raises, or "" where it passes."""
    hidden_check("evidence")  # grader/ on sys.path, as the hidden cells find it

    def run(check, arg) -> str:
        from checks import PeftMistake

        try:
            check(arg)
        except PeftMistake as err:
            return str(err)
        return ""

    return run


@pytest.fixture
def on(monkeypatch):
    """on(hardware): pretend the grading machine is `hardware` (what labutils.doctor.detect_hardware reports)."""
    import labutils.doctor

    monkeypatch.delenv("PEFT_COURSE_HARDWARE", raising=False)

    def simulate(hardware):
        monkeypatch.setattr(labutils.doctor, "detect_hardware", lambda: dict(hardware))

    return simulate


def colab_tool_stand_ins(
    folder: Path, log: str, git_fails: bool = False, pip_fails: bool = False, pip_does: str = "true"
) -> Path:
    """`git` and `pip` for the Colab set-up cell, in `folder`: each appends its command line to `log` (a path, or
    a shell expression such as "$COLAB_TOOLS/log"); a working `git clone` leaves a clone's pyproject.toml, a
    failing one or `pip` exits as the real ones do offline; a working `pip` runs the shell code `pip_does`.
    Returns `folder`, to put first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    git = (
        "echo \"fatal: unable to access 'https://github.com/': Could not resolve host\" >&2; exit 128"
        if git_fails
        else 'for a; do dest=$a; done; mkdir -p "$dest" && touch "$dest/pyproject.toml"'
    )
    pip = (
        'echo "ERROR: No matching distribution found for peft==0.21.2" >&2; exit 1' if pip_fails else pip_does
    )
    for name, body in (("git", git), ("pip", pip)):
        tool = folder / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n{body}\n')
        tool.chmod(0o755)
    return folder


def borrowed_venv(venv: Path) -> Path:
    """A fresh virtual environment that borrows this one's third-party libraries (pip included) through a
    .pth file: their folder joins sys.path, but none of its own .pth files run, so this checkout's editable
    install stays invisible there. Nothing is downloaded. Returns its python."""
    import site
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    borrowed = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    (Path(purelib) / "borrowed.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    return python


def outside_verdicts(lab: str, folder: Path) -> tuple[dict[str, str], bool]:
    """checks.outside's verdicts on `folder`, decided in a fresh process that has only grader/ on its path,
    and whether that process imported torch."""
    from peft_grader import nbcourse

    code = (
        "import json, sys; from pathlib import Path; from checks import outside; "
        "v = outside.verdicts(sys.argv[1], Path(sys.argv[2])); print(json.dumps([v, 'torch' in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, lab, str(folder)],
        env={"PYTHONPATH": str(nbcourse.GRADER), "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found, torch_imported = json.loads(out)
    return found, torch_imported


@pytest.fixture
def outside():
    return outside_verdicts


# The class is graded with the instructor's per-cell timeout (grader/nbgrader_config.py), against which
# tests/end_to_end/test_catalogue.py proves every honest cell's 4x margin, and a wall budget tighter than the default
# 900 s so the hostile entries end sooner (the loops wait out one timeout, then finish well inside it).
CLASS_TIMEOUT = 180
CLASS_BUDGET = 300


@pytest.fixture(scope="session")
def graded_class(tmp_path_factory):
    """One sandboxed grading run of both catalogues: every lab's mistake entries and the reference,
    and the adversarial entries. One run pays nbgrader's per-class costs once, and its worker pool
    overlaps the adversarial entries that only sleep (loops, the wall budget) with others' CPU work:
    with 4 workers on 2 cores, two of them sleeping at once still leave both cores busy (bench/README.md).
    Every honest notebook finishes well inside the timeout and the budget, even four at a time."""
    from peft_grader import adversarial, catalogue, grading, nbcourse

    root = tmp_path_factory.mktemp("class")
    mistakes = catalogue.write_class(root / "submissions", nbcourse.labs())
    hostile = adversarial.write_class(root / "submissions", nbcourse.labs())
    course = root / "course"
    try:
        results = grading.grade(
            root / "submissions", course, quiet=True, workers=4, timeout=CLASS_TIMEOUT, budget=CLASS_BUDGET
        )
        yield GradedClass(course, mistakes, hostile, results, CLASS_TIMEOUT)
    finally:
        for probe in adversarial.escaped_probes(course):  # never leave an escaped write behind
            probe.unlink(missing_ok=True)
