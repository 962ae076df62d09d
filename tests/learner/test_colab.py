"""The workshop path: every released lab opens in Colab and its set-up cell does the right thing there.

The set-up cell runs here as on Colab, its shell commands run for real with stand-ins for `git` and `pip`
first on PATH (a failing one where a test says so) and the course folder moved into a temporary one, with
the `google.colab` module present (Colab) and absent (a laptop): no network is needed.
"""

from __future__ import annotations

import os
import sys
import types
from importlib.metadata import version
from pathlib import Path

import nbformat
import pytest
from conftest import colab_tool_stand_ins

from peft_grader import nbcourse
from peft_grader.course import colab_url, repository

RELEASED = sorted(nbcourse.NOTEBOOKS.glob("*.ipynb"))
CONSTRAINTS = Path(nbcourse.REPO / "src" / "labutils" / "constraints.txt")


def _setup_cell(path: Path) -> str:
    cells = nbformat.read(path, as_version=4).cells
    [cell] = [c for c in cells if c.metadata.get("nbgrader", {}).get("grade_id") == "colab_setup"]
    return cell.source


COURSE = "/content/peft-course"


def _run_setup(source: str, monkeypatch, tmp_path: Path, on_colab: bool, **failures):
    """The cell as Colab runs it, its commands run for real by the shell, with /content/peft-course moved
    into tmp_path and stand-ins for git and pip first on PATH. Returns the commands run, the profile chosen,
    and the readable message where the cell stopped (else None)."""
    # setenv first, so pytest restores the variable even though the cell sets it after delenv
    monkeypatch.setenv("PEFT_COURSE_PROFILE", "unset")
    monkeypatch.delenv("PEFT_COURSE_PROFILE")
    monkeypatch.setattr(sys, "path", list(sys.path))
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    log = tmp_path / "bin" / "log"
    colab_tool_stand_ins(tmp_path / "bin", str(log), **failures)
    log.unlink(missing_ok=True)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    stopped = None
    try:
        exec(source.replace(COURSE, str(tmp_path / "peft-course")), {})  # noqa: S102
    except SystemExit as stop:
        stopped = str(stop)
    commands = log.read_text().splitlines() if log.exists() else []
    return commands, os.environ.get("PEFT_COURSE_PROFILE"), stopped


@pytest.mark.parametrize("path", RELEASED, ids=lambda p: p.stem)
def test_badge_opens_this_notebook_in_the_repository(path):
    intro = nbformat.read(path, as_version=4).cells[0].source
    assert f"]({colab_url(path.stem)})" in intro
    assert colab_url(path.stem).endswith(f"github/{repository()}/blob/main/notebooks/{path.name}")


@pytest.mark.parametrize("path", RELEASED, ids=lambda p: p.stem)
def test_setup_cell_on_colab_installs_the_pinned_course_and_picks_the_hub(path, monkeypatch, tmp_path):
    commands, profile, stopped = _run_setup(_setup_cell(path), monkeypatch, tmp_path, on_colab=True)
    assert stopped is None and len(commands) == 2, commands
    assert commands[0].startswith("git clone") and f"https://github.com/{repository()} " in commands[0]
    assert commands[1].startswith("pip install") and f"-e {tmp_path}/peft-course" in commands[1]
    assert f"-c {tmp_path}/peft-course/src/labutils/constraints.txt" in commands[1]
    assert profile == "hub" and f"{tmp_path}/peft-course/src" in sys.path
    # a second lab in the same runtime only selects the hub
    commands, profile, stopped = _run_setup(_setup_cell(path), monkeypatch, tmp_path, on_colab=True)
    assert commands == [] and profile == "hub" and stopped is None


@pytest.mark.parametrize("path", RELEASED, ids=lambda p: p.stem)
def test_setup_cell_does_nothing_locally(path, monkeypatch, tmp_path):
    commands, profile, stopped = _run_setup(_setup_cell(path), monkeypatch, tmp_path, on_colab=False)
    assert commands == [] and profile is None and stopped is None


SETUP = RELEASED[0]  # the cell is the same in every lab (tests/grader/test_release.py)


def test_a_failed_clone_stops_with_the_reason_and_a_rerun_repairs_it(monkeypatch, tmp_path):
    (tmp_path / "peft-course" / "src").mkdir(parents=True)  # a clone cut short: no pyproject.toml
    commands, profile, stopped = _run_setup(_setup_cell(SETUP), monkeypatch, tmp_path, True, git_fails=True)
    assert (
        stopped and "this step failed (clone the course)" in stopped and "Could not resolve host" in stopped
    )
    assert "run this cell again" in stopped and profile is None and len(commands) == 1  # pip never ran
    commands, profile, stopped = _run_setup(_setup_cell(SETUP), monkeypatch, tmp_path, True)
    assert stopped is None and [c.split()[:2] for c in commands] == [["git", "clone"], ["pip", "install"]]
    assert profile == "hub" and not (tmp_path / "peft-course" / "src").exists()  # the half-made clone went


def test_a_failed_install_stops_with_the_reason_and_a_rerun_repairs_it(monkeypatch, tmp_path):
    commands, profile, stopped = _run_setup(_setup_cell(SETUP), monkeypatch, tmp_path, True, pip_fails=True)
    assert (
        stopped
        and "this step failed (install the course)" in stopped
        and "No matching distribution" in stopped
    )
    assert not (tmp_path / "peft-course" / ".installed").exists() and profile is None
    commands, profile, stopped = _run_setup(_setup_cell(SETUP), monkeypatch, tmp_path, True)
    assert stopped is None and [c.split()[:2] for c in commands] == [["pip", "install"]]  # the clone is kept
    assert (tmp_path / "peft-course" / ".installed").exists() and profile == "hub"


def test_constraints_are_the_versions_installed_here():
    """Colab gets exactly the library versions `make setup` installed and CI tested."""
    pins = [line.split("==") for line in CONSTRAINTS.read_text().splitlines() if "==" in line]
    assert {name for name, _ in pins} >= {"transformers", "peft", "bitsandbytes", "accelerate", "datasets"}
    for name, pinned in pins:
        assert version(name) == pinned, (
            f"{name} {version(name)} installed, {pinned} pinned in {CONSTRAINTS.name}"
        )


def test_workshop_guide_links_every_lab_in_colab():
    text = (nbcourse.REPO / "WORKSHOP.md").read_text()
    for lab in nbcourse.labs():
        assert f"]({colab_url(lab)})" in text, f"WORKSHOP.md has no Colab link to {lab}"
