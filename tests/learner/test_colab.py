"""The workshop path: every released lab opens in Colab and its set-up cell does the right thing there.

The set-up cell runs here with IPython's own transformation of its `!` lines, against a recording
shell, with the `google.colab` module present (Colab) and absent (a laptop): no network is needed.
"""

from __future__ import annotations

import os
import sys
import types
from importlib.metadata import version
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

from peft_grader import nbcourse
from peft_grader.course import colab_url, repository

RELEASED = sorted(nbcourse.NOTEBOOKS.glob("*.ipynb"))
CONSTRAINTS = Path(nbcourse.REPO / "src" / "labutils" / "constraints.txt")


def _setup_cell(path: Path) -> str:
    cells = nbformat.read(path, as_version=4).cells
    [cell] = [c for c in cells if c.metadata.get("nbgrader", {}).get("grade_id") == "colab_setup"]
    return cell.source


class _Shell:
    """Stands in for get_ipython(): records the shell commands instead of running them."""

    def __init__(self):
        self.commands: list[str] = []

    def system(self, command: str) -> None:
        self.commands.append(command)


def _run_setup(
    source: str, monkeypatch, on_colab: bool, cloned: bool = False
) -> tuple[list[str], str | None]:
    # setenv first, so pytest restores the variable even though the cell sets it after delenv
    monkeypatch.setenv("PEFT_COURSE_PROFILE", "unset")
    monkeypatch.delenv("PEFT_COURSE_PROFILE")
    monkeypatch.setattr(sys, "path", list(sys.path))
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    real_isdir = os.path.isdir
    monkeypatch.setattr(os.path, "isdir", lambda p: cloned if p == "/content/peft-course" else real_isdir(p))
    shell = _Shell()
    exec(TransformerManager().transform_cell(source), {"get_ipython": lambda: shell})  # noqa: S102
    return shell.commands, os.environ.get("PEFT_COURSE_PROFILE")


@pytest.mark.parametrize("path", RELEASED, ids=lambda p: p.stem)
def test_badge_opens_this_notebook_in_the_repository(path):
    intro = nbformat.read(path, as_version=4).cells[0].source
    assert f"]({colab_url(path.stem)})" in intro
    assert colab_url(path.stem).endswith(f"github/{repository()}/blob/main/notebooks/{path.name}")


@pytest.mark.parametrize("path", RELEASED, ids=lambda p: p.stem)
def test_setup_cell_on_colab_installs_the_pinned_course_and_picks_the_hub(path, monkeypatch):
    commands, profile = _run_setup(_setup_cell(path), monkeypatch, on_colab=True)
    assert len(commands) == 2, commands
    assert f"https://github.com/{repository()} /content/peft-course" in commands[0]
    assert commands[1].startswith("pip install") and "-e /content/peft-course" in commands[1]
    assert "-c /content/peft-course/src/labutils/constraints.txt" in commands[1]
    assert profile == "hub" and "/content/peft-course/src" in sys.path


@pytest.mark.parametrize("path", RELEASED, ids=lambda p: p.stem)
def test_setup_cell_on_colab_with_the_course_installed_only_selects_the_hub(path, monkeypatch):
    commands, profile = _run_setup(_setup_cell(path), monkeypatch, on_colab=True, cloned=True)
    assert commands == [] and profile == "hub"  # a second lab in the same runtime still uses hub models


@pytest.mark.parametrize("path", RELEASED, ids=lambda p: p.stem)
def test_setup_cell_does_nothing_locally(path, monkeypatch):
    commands, profile = _run_setup(_setup_cell(path), monkeypatch, on_colab=False)
    assert commands == [] and profile is None


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
