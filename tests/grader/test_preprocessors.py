"""The grader's own steps of `nbgrader autograde` (peft_grader.preprocessors, sandbox_execute), each on tiny
synthetic notebooks as nbgrader tests its own, then a plain `nbgrader autograde` run by hand in a course
folder that loads grader/nbgrader_config.py: the order repair, the tamper review and the sandbox apply."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from traitlets.config import Config

from peft_grader.nbcourse import GRADER
from peft_grader.preprocessors import (
    REVIEW_KEY,
    TIMEOUT_KEY,
    RepairOrder,
    ReviewTampering,
    declared_timeouts,
    repair_order,
)
from peft_grader.sandbox_execute import SandboxExecute

CHECKS_INIT = GRADER / "checks" / "__init__.py"


def _cell(source: str, grade_id: str, **flags) -> nbformat.NotebookNode:
    meta = {"grade": False, "solution": False, "locked": False, "grade_id": grade_id, "schema_version": 3}
    return new_code_cell(source, metadata={"nbgrader": meta | flags})


def _master() -> nbformat.NotebookNode:
    return new_notebook(
        cells=[
            _cell("x = 0", "setup", locked=True),
            _cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "answer", solution=True),
            _cell('assert x == 1, "x should be 1"', "test_x", grade=True, locked=True, points=1),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )


def _ids(nb) -> list[str]:
    return [c.metadata.get("nbgrader", {}).get("grade_id", c.source) for c in nb.cells]


def test_repair_order_puts_master_cells_back_with_the_cells_that_followed_them():
    master = _master()
    setup, answer, test = (nbformat.from_dict(c) for c in master.cells)
    copy = nbformat.from_dict(test)
    nb = new_notebook(cells=[setup, test, answer, new_code_cell("mine"), copy])
    repair_order(nb, master)
    assert _ids(nb) == ["setup", "answer", "mine", 'assert x == 1, "x should be 1"', "test_x"]
    assert "nbgrader" not in nb.cells[3].metadata  # the copy became a plain cell


def _resources(tmp_path: Path) -> tuple[Config, dict]:
    (tmp_path / "source" / "t1").mkdir(parents=True)
    nbformat.write(_master(), tmp_path / "source" / "t1" / "t1.ipynb")
    config = Config()
    config.CourseDirectory.root = str(tmp_path)
    config.CourseDirectory.source_directory = "source"
    return config, {"nbgrader": {"assignment": "t1", "notebook": "t1", "student": "s1"}}


def test_preprocessors_read_the_master_from_the_course(tmp_path):
    config, resources = _resources(tmp_path)
    master = _master()
    nb = new_notebook(cells=[master.cells[2], master.cells[0], master.cells[1]])
    nb, _ = RepairOrder(config=config).preprocess(nb, resources)
    assert _ids(nb) == ["setup", "answer", "test_x"]


def test_tamper_review_comments_out_and_records_what_it_removed(tmp_path):
    config, resources = _resources(tmp_path)
    master = _master()
    answer = nbformat.from_dict(master.cells[1])
    answer.source = "import checks\nx = 1\n%time y = 2"
    nb = new_notebook(
        cells=[master.cells[0], answer, master.cells[2]], metadata={REVIEW_KEY: {"removed": []}}
    )
    nb, _ = ReviewTampering(config=config).preprocess(nb, resources)
    assert nb.cells[1].source.startswith("# removed by the grader (tampering): import checks")
    assert "x = 1" in nb.cells[1].source.splitlines()  # honest code runs as written
    review = nb.metadata[REVIEW_KEY]  # the planted record is replaced
    assert review["removed"] == ["cell answer line 1: imports checks"] and review["flagged"] == []


def _env() -> dict[str, str]:
    # nbgrader shells out to alembic when it creates a gradebook: the interpreter's bin must be on PATH.
    return os.environ | {"PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}


@pytest.mark.slow
def test_plain_nbgrader_autograde_applies_the_repair_the_review_and_the_sandbox(tmp_path):
    config_lines = [
        "c = get_config()  # noqa: F821",
        f"load_subconfig({str(GRADER / 'nbgrader_config.py')!r})  # noqa: F821",
        f"c.CourseDirectory.root = {str(tmp_path)!r}",
        "c.CourseDirectory.source_directory = 'source'",
    ]
    (tmp_path / "nbgrader_config.py").write_text("\n".join(config_lines) + "\n")
    _resources(tmp_path)

    def nbgrader(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "nbgrader", *args],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
        )

    assert nbgrader("generate_assignment", "t1", "--force").returncode == 0
    nb = nbformat.read(tmp_path / "release" / "t1" / "t1.ipynb", as_version=4)
    setup, answer, test = nb.cells
    answer.source = "import checks\nx = 1"
    probe = new_code_cell(
        "import os, pathlib\n"
        "print('sandbox:', os.environ.get('NBGRADER_SANDBOX'))\n"
        f"print('checks visible:', pathlib.Path({str(CHECKS_INIT)!r}).exists())"
    )
    nb.cells = [setup, test, answer, probe]  # the test moved above the answer: it would fail there
    (tmp_path / "submitted" / "s1" / "t1").mkdir(parents=True)
    nbformat.write(nb, tmp_path / "submitted" / "s1" / "t1" / "t1.ipynb")

    proc = nbgrader("autograde", "t1", "--student", "s1", "--force")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    graded = nbformat.read(tmp_path / "autograded" / "s1" / "t1" / "t1.ipynb", as_version=4)
    assert [c.metadata.get("nbgrader", {}).get("grade_id") for c in graded.cells] == [
        "setup",
        "answer",
        None,
        "test_x",
    ]
    assert graded.metadata[REVIEW_KEY]["removed"] == ["cell answer line 1: imports checks"]
    printed = "".join(o.get("text", "") for o in graded.cells[2].outputs)
    assert "sandbox: 1" in printed  # the kernel was started by the sandbox's launcher
    if shutil.which("bwrap"):
        assert "checks visible: False" in printed  # and the grader's checks were hidden from it
    test_outputs = graded.cells[3].outputs
    assert not any(o.output_type == "error" for o in test_outputs), test_outputs  # scored: the order held


def test_a_locked_training_cell_gets_the_longer_timeout_its_master_declares(tmp_path):
    """A master may give a locked cell that trains more time than the course's timeout; a learner's own cell
    claiming the same in its metadata does not get it."""
    train = _cell("import time\ntime.sleep(3)\ntrained = True", "train", locked=True)
    train.metadata[TIMEOUT_KEY] = 30
    master = new_notebook(
        cells=[train, _cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "answer", solution=True)],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    assert declared_timeouts(master) == {"train": 30}
    (tmp_path / "source" / "t1").mkdir(parents=True)
    nbformat.write(master, tmp_path / "source" / "t1" / "t1.ipynb")
    submission = nbformat.from_dict(master)
    submission.cells[1].source = "import time\ntime.sleep(3)\nx = 1"
    submission.cells[1].metadata[TIMEOUT_KEY] = 30  # the learner's claim: not honoured

    config = Config()
    config.CourseDirectory.root = str(tmp_path)
    config.CourseDirectory.source_directory = "source"
    config.SandboxExecute.isolate = False
    config.SandboxExecute.timeout = 1
    resources = {
        "nbgrader": {"assignment": "t1", "notebook": "t1", "student": "s1"},
        "metadata": {"path": str(tmp_path)},
    }
    nb, _ = SandboxExecute(config=config).preprocess(submission, resources)
    errors = [[o.ename for o in c.outputs if o.output_type == "error"] for c in nb.cells]
    assert errors[0] == []  # 3 s, inside its declared 30 s
    assert errors[1], nb.cells[1].outputs  # 3 s, past the course's 1 s
