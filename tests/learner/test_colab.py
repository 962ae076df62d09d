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
COLAB_CONSTRAINTS = CONSTRAINTS.with_name("constraints-colab.txt")


def _setup_cell(path: Path) -> str:
    cells = nbformat.read(path, as_version=4).cells
    [cell] = [c for c in cells if c.metadata.get("nbgrader", {}).get("grade_id") == "colab_setup"]
    return cell.source


COURSE = "/content/peft-course"


def _run_setup(source: str, monkeypatch, tmp_path: Path, on_colab: bool, namespace=None, **failures):
    """The cell as Colab runs it, its commands run for real by the shell, with /content/peft-course moved
    into tmp_path and stand-ins for git and pip first on PATH; `namespace`, the notebook's globals, is kept
    between runs as a kernel keeps them. Returns the commands run, the profile chosen, and the readable message
    where the cell stopped (else None)."""
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
        exec(source.replace(COURSE, str(tmp_path / "peft-course")), {} if namespace is None else namespace)  # noqa: S102
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
    assert f"-c {tmp_path}/peft-course/src/labutils/constraints-colab.txt" in commands[1]
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


def _fake_library(site: Path, version: str) -> None:
    """A distribution `colabfake` of `version` in `site`, as pip leaves one (its metadata and its module)."""
    info = site / f"colabfake-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: colabfake\nVersion: {version}\n")
    (info / "top_level.txt").write_text("colabfake\n")
    (site / "colabfake.py").write_text(f"VERSION = {version!r}\n")


@pytest.mark.parametrize("imported", [True, False], ids=["imported before", "not imported"])
def test_a_library_replaced_after_the_runtime_imported_it_asks_for_a_restart(imported, monkeypatch, tmp_path):
    """The install replaces colabfake 1.0 with 2.0. Imported before, the old one stays in memory: the cell stops
    and asks for a restart, and after the restart (a new process) the rerun goes on. Not imported: no restart."""
    site = tmp_path / "site"
    _fake_library(site, "1.0")
    monkeypatch.syspath_prepend(str(site))
    if imported:
        monkeypatch.setitem(sys.modules, "colabfake", types.ModuleType("colabfake"))
    old, new = site / "colabfake-1.0.dist-info", site / "colabfake-2.0.dist-info"
    upgrade = (  # what pip does when it replaces a library: the old metadata goes, the new one comes
        f"rm -r {old} && mkdir {new} && echo colabfake > {new}/top_level.txt && "
        f"printf 'Metadata-Version: 2.1\\nName: colabfake\\nVersion: 2.0\\n' > {new}/METADATA"
    )
    namespace = {}

    def run():
        return _run_setup(
            _setup_cell(SETUP), monkeypatch, tmp_path, True, pip_does=upgrade, namespace=namespace
        )

    commands, profile, stopped = run()
    assert [c.split()[:2] for c in commands] == [["git", "clone"], ["pip", "install"]]
    if not imported:
        assert stopped is None and profile == "hub"
        return
    assert stopped and stopped.startswith(
        "Restart the runtime (Runtime > Restart session), then run this cell"
    )
    assert "colabfake 1.0 -> 2.0, which this runtime had already imported" in stopped and profile is None
    commands, profile, stopped = run()  # rerun without a restart: still stale
    assert commands == [] and stopped and "colabfake 1.0 -> 2.0" in stopped
    monkeypatch.delitem(
        sys.modules, "colabfake"
    )  # the restart: a new process, nothing imported, nothing kept
    namespace.clear()
    commands, profile, stopped = run()
    assert commands == [] and stopped is None and profile == "hub"


def test_colab_constraints_add_what_colab_lacks_and_never_downgrade():
    """The set-up cell's pins on Colab: what Colab lacks at the versions CI tests, and a replacement of what
    Colab has only to a newer version. Colab's versions: colab/pip-freeze.gpu.txt."""
    from packaging.version import Version

    def pins(path: Path) -> dict[str, str]:
        lines = path.read_text().splitlines()
        return {
            name.lower().replace("_", "-"): v.split("+")[0]
            for name, v in (line.split("==") for line in lines if "==" in line and not line.startswith("#"))
        }

    colab, ours, tested = (
        pins(nbcourse.REPO / "colab/pip-freeze.gpu.txt"),
        pins(COLAB_CONSTRAINTS),
        pins(CONSTRAINTS),
    )
    assert {"bitsandbytes", "trl"} <= set(ours) and not {"bitsandbytes", "trl"} & set(colab)
    for name in ("bitsandbytes", "trl"):
        assert ours[name] == tested[name]
    for name, pinned in ours.items():
        if name in colab:
            assert Version(pinned) > Version(colab[name]), f"{name}: {colab[name]} on Colab, {pinned} pinned"
    assert not {"transformers", "peft", "accelerate", "torch", "jsonschema"} & set(ours)  # Colab's stay


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


def test_the_rehearsal_reports_what_the_setup_cell_changed():
    """colab/rehearse.py's report of two `pip list`s: installed, upgraded (by version order, not text order),
    downgraded and removed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rehearse", nbcourse.REPO / "colab" / "rehearse.py")
    rehearse = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rehearse)
    before = {"datasets": "4.0.0", "pyarrow": "9.0.0", "jsonschema": "4.26.0", "six": "1.16.0", "gone": "1"}
    after = {
        "datasets": "4.7.0",
        "pyarrow": "21.0.0",
        "jsonschema": "4.24.1",
        "six": "1.16.0",
        "trl": "1.16.0",
    }
    assert rehearse.changes(before, after) == {
        "installed": [["trl", "1.16.0"]],
        "upgraded": [["datasets", "4.0.0", "4.7.0"], ["pyarrow", "9.0.0", "21.0.0"]],
        "downgraded": [["jsonschema", "4.26.0", "4.24.1"]],
        "removed": [["gone", "1"]],
    }
