"""The learner bundle (`labutils release --bundle DIR`): it installs on its own, passes its own tests, and
holds no solution, no hidden test and no check code.

The bundle is installed into a fresh virtual environment that borrows this one's third-party libraries
(tests/conftest.py: borrowed_venv), so nothing is downloaded; the bundle itself is installed there with
pip, without its dependencies.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from conftest import borrowed_venv

from peft_grader import nbcourse
from peft_grader.bundle import bundle

pytestmark = pytest.mark.slow
SLUG = "a-teacher/peft-class-2027"


@pytest.fixture(scope="module")
def learner(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    folder = bundle(root / "class", repository=SLUG)
    python = borrowed_venv(root / "venv")
    install = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(folder)]
    subprocess.run(install, check=True, capture_output=True)
    return folder, python


def test_the_bundle_holds_no_solution_no_hidden_test_and_no_check_code(learner):
    folder, _ = learner
    markers = re.compile(r"BEGIN SOLUTION|BEGIN HIDDEN TESTS|from checks\b|import checks\b|def judge")
    for path in (p for p in folder.rglob("*") if p.is_file() and p.name != "test_course.py"):
        assert not markers.search(path.read_text(errors="replace")), path
    assert not {"grader", "checks", "peft_grader", "source", "mistakes"} & {p.name for p in folder.rglob("*")}
    notebooks = sorted(p.name for p in (folder / "notebooks").glob("*.ipynb"))
    assert notebooks == [f"{lab}.ipynb" for lab in nbcourse.labs()]  # every lab, nothing else
    for nb in (folder / "notebooks").glob("*.ipynb"):  # badges and set-up cells point at the class repository
        text = nb.read_text()
        assert f"github/{SLUG}/blob/main/notebooks/{nb.name}" in text and f"github.com/{SLUG} " in text
        assert "peft-course/peft-course" not in text


def test_the_bundle_is_its_own_course_in_a_fresh_environment(learner):
    folder, python = learner
    where = subprocess.run(
        [
            python,
            "-c",
            "import labutils, importlib.util; print(labutils.__file__, importlib.util.find_spec('peft_grader'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(folder / "src" / "labutils")) and where.strip().endswith("None")
    proc = subprocess.run([python, "-m", "pytest", "-q", "tests"], cwd=folder, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "3 passed" in proc.stdout
