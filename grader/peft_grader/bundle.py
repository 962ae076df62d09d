"""`labutils release --bundle DIR`: the course for the learners of an instructor-led class.

A clone of the full course holds every solution (grader/source) and every hidden check (grader/checks).
The bundle holds what a learner needs and nothing of the grader: the released notebooks (no solutions, no
hidden tests), the learner's package `labutils` with the data, a README, a Makefile, an environment.yml,
a pyproject.toml that installs only `labutils`, and a smoke test. An instructor publishes the folder as
the class repository; its Colab badges and set-up cells point there.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from labutils.errors import CourseError
from peft_grader.course import repository as course_repository
from peft_grader.nbcourse import REPO
from peft_grader.release import release

# What a bundle must never hold: solutions and hidden tests (their markers), the checks' code (imported
# by hidden tests), and the grader's folders.
FORBIDDEN = re.compile(r"BEGIN SOLUTION|BEGIN HIDDEN TESTS|from checks\b|import checks\b")
GRADER_FOLDERS = {"peft_grader", "checks", "source", "mistakes", "adversarial", "grader"}

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "peft-course-learner"
version = "{version}"
description = "The PEFT course for learners: the labs and labutils (no solutions, no hidden checks)"
requires-python = ">=3.10"
dependencies = {dependencies}

[project.optional-dependencies]
lab = ["jupyterlab>=4.2"]
dev = ["pytest>=8"]

[project.scripts]
labutils = "labutils.cli:main"

[tool.setuptools.packages.find]
where = ["src"]

[tool.peft-course]
# The class repository: Colab badges and set-up cells point here.
repository = "{repository}"
"""

MAKEFILE = """\
# The learner's course: `make setup`, `make lab`, `make test`.
PYTHON ?= python3
BIN    := .venv/bin
TORCH  ?= torch==2.13.0

.PHONY: setup lab test

setup: .venv/.installed

.venv/.installed: pyproject.toml src/labutils/constraints.txt
\ttest -x $(BIN)/python || $(PYTHON) -m venv .venv
\t$(BIN)/python -m pip install -q --upgrade pip
\t$(BIN)/python -m pip install -q "$(TORCH)"
\t$(BIN)/python -m pip install -q -e ".[lab,dev]" -c src/labutils/constraints.txt
\ttouch $@

lab: setup
\t$(BIN)/jupyter lab notebooks/

test: setup
\t$(BIN)/python -m pytest -q tests
"""

ENVIRONMENT = """\
# conda users: `conda env create -f environment.yml && conda activate peft-course`, then `jupyter lab notebooks/`.
name: peft-course
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - pip:
      - torch==2.13.0
      - -e .[lab]
      - -c src/labutils/constraints.txt
"""

README = """\
# The PEFT course: your labs

Eight JupyterLab notebooks on parameter-efficient fine-tuning (LoRA, QLoRA, target modules, rank and
alpha, task heads, saving and loading adapters). Each runs offline on a laptop CPU with small models
built on your machine, or on a GPU with real hub models.

```bash
make setup     # a virtual environment with the course's library versions (once)
make lab       # JupyterLab on notebooks/
make test      # checks that this copy works on your machine
```

Or open a lab in Colab from its badge. Fill the `# YOUR CODE HERE` cells and run the test cell after each:
its hint tells you what to fix. Your instructor grades your saved notebooks with the course's hidden checks,
which are not in this copy (nor are the solutions): `labutils check` says so here.

`labutils doctor` tells whether this environment can run the labs.
"""

SMOKE_TEST = '''\
"""This copy of the course works here: the learner package, its data, a course model, the notebooks."""

import json
import subprocess
import sys
from pathlib import Path

import labutils
from labutils.data import load_instructions, load_sentiment
from labutils.models import ensure_tiny_model

HERE = Path(__file__).resolve().parents[1]


def test_the_data_and_a_course_model_load():
    assert len(load_instructions()["train"]) > 100 and len(load_sentiment()["train"]) > 100
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ensure_tiny_model("causal_lm"))
    assert model.config.model_type == "llama" and labutils.current_profile() == "tiny"


def test_every_lab_is_a_notebook_with_exercises_and_no_solution():
    labs = sorted((HERE / "notebooks").glob("*.ipynb"))
    assert len(labs) >= 8
    for lab in labs:
        text = "".join("".join(c["source"]) for c in json.loads(lab.read_text())["cells"])
        assert "YOUR CODE HERE" in text and "BEGIN SOLUTION" not in text, lab.name


def test_labutils_check_says_the_grader_is_not_here():
    proc = subprocess.run(
        [sys.executable, "-m", "labutils.cli", "check", str(HERE / "notebooks" / "00_setup.ipynb")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "grader" in proc.stderr and "Traceback" not in proc.stderr
'''


def _dependencies() -> str:
    """The course's own runtime dependencies, read from its pyproject.toml (one list, never copied)."""
    text = (REPO / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.M | re.S)[1]
    names = re.findall(r'^\s*("[^"]+"),', block, re.M)
    return "[" + ", ".join(names) + "]"


def bundle(target: Path, repository: str | None = None) -> Path:
    """Write the learner bundle into `target` (a new or empty folder) and return it."""
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise CourseError(f"{target} is not empty. Fix: give a new folder for the bundle.")
    slug = repository or course_repository()
    release(target / "notebooks", repository=slug)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "src" / "labutils", target / "src" / "labutils", ignore=ignore)
    shutil.copytree(REPO / "data", target / "data", ignore=ignore)
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)[1]
    files = {
        "pyproject.toml": PYPROJECT.format(version=version, dependencies=_dependencies(), repository=slug),
        "Makefile": MAKEFILE,
        "environment.yml": ENVIRONMENT,
        "README.md": README,
        "tests/test_course.py": SMOKE_TEST,
    }
    for name, text in files.items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text(text)
    leaks = [
        str(p.relative_to(target))
        for p in target.rglob("*")
        if p.is_file() and (_leaks(p) or GRADER_FOLDERS & set(p.relative_to(target).parts[:-1]))
    ]
    if leaks:
        raise CourseError(
            f"the bundle would hand out grader material in {', '.join(leaks)}; nothing was published"
        )
    return target


def _leaks(path: Path) -> bool:
    if path.name == "test_course.py":  # the smoke test names the markers it looks for
        return False
    try:
        return bool(FORBIDDEN.search(path.read_text()))
    except UnicodeDecodeError:
        return False
