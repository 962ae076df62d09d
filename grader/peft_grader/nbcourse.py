"""The nbgrader course: where its files are, a course folder that loads grader/nbgrader_config.py,
and nbgrader run as a child process with a wall budget.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nbformat

from labutils.errors import CourseError

REPO = Path(__file__).resolve().parents[2]
GRADER = REPO / "grader"
SOURCE = GRADER / "source"
NOTEBOOKS = REPO / "notebooks"


def labs() -> list[str]:
    """The labs that have a master notebook, in course order."""
    return sorted(p.parent.name for p in SOURCE.glob("*/*.ipynb") if p.stem == p.parent.name)


def grading_env() -> dict[str, str]:
    env = dict(os.environ)
    # nbgrader shells out to alembic when it creates a gradebook: the interpreter's bin must be on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def make_course(course_dir: Path, timeout: int | None = None, settings: dict | None = None) -> Path:
    """An nbgrader course folder that loads the repo's config and keeps everything it writes inside.

    `settings` are more config values, e.g. {"SandboxExecute.budget": 900}: the grader's own
    preprocessors are already registered by grader/nbgrader_config.py."""
    course_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "c = get_config()  # noqa: F821",
        f"load_subconfig({str(GRADER / 'nbgrader_config.py')!r})  # noqa: F821",
        f"c.CourseDirectory.root = {str(course_dir.resolve())!r}",
        f"c.CourseDirectory.source_directory = {str(SOURCE)!r}",
        # nbgrader's exchange (assignment release/collect inside JupyterHub) is not used; a folder of its
        # own keeps formgrader from warning that /usr/local/share/nbgrader/exchange does not exist.
        f"c.Exchange.root = {str((course_dir / 'exchange').resolve())!r}",
    ]
    (course_dir / "exchange").mkdir(exist_ok=True)
    if timeout:
        lines += [f"c.Execute.timeout = {int(timeout)}", f"c.ExecutePreprocessor.timeout = {int(timeout)}"]
    lines += [f"c.{name} = {value!r}" for name, value in (settings or {}).items()]
    (course_dir / "nbgrader_config.py").write_text("\n".join(lines) + "\n")
    return course_dir


def checks_data(relative: str) -> dict:
    """The names a standard-library file of grader/checks defines (`__init__.py`, a lab's `lab04_qlora/__init__.py`),
    read by executing that file alone: the checks package is never imported into the grading process, whose
    threads share sys.path and sys.modules."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_course_checks", GRADER / "checks" / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return vars(module)


def lab_registry(lab: str, name: str) -> dict:
    """A registry of grader/checks/lab<lab>/__init__.py, read without importing the checks: OUTSIDE (the test
    cells decided again outside the kernel), RECORDS (the locked cells after which the kernel guard records
    what did the work; RECORDS_BEFORE, what it starts from), FROM_RECORDS, WATCH (the locked cells whose calls
    into learner code are held); {} for a lab without it."""
    if not (GRADER / "checks" / f"lab{lab}" / "__init__.py").is_file():
        return {}
    return dict(checks_data(f"lab{lab}/__init__.py").get(name, {}))


def outside_targets(lab: str) -> dict[str, str]:
    """The lab's test cells that checks.outside decides again outside the kernel: grade id -> "judges.NAME" or
    "files.NAME"."""
    return lab_registry(lab, "OUTSIDE")


@functools.cache
def grader_version() -> str:
    """A short digest of the grading engine, the checks and the masters: what a grade depends on."""
    import hashlib

    sha = hashlib.sha256()
    for folder in (GRADER / "peft_grader", GRADER / "checks", SOURCE):
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix in (".py", ".ipynb"):
                sha.update(path.relative_to(GRADER).as_posix().encode() + path.read_bytes())
    return sha.hexdigest()[:12]


def nbgrader(
    course_dir: Path, *args: str, check: bool = True, env: dict | None = None, budget: float | None = None
) -> subprocess.CompletedProcess:
    """Run nbgrader in course_dir; past `budget` seconds its whole process tree is killed (returncode -9)."""
    import importlib.util

    if importlib.util.find_spec("nbgrader") is None:
        raise CourseError("nbgrader is not installed. Fix: `make setup`, or pip install -e '.[grader]'.")
    # setpriv: killed with the process that started it (a Dask worker that dies takes its grading along)
    orphan_guard = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
    proc = subprocess.Popen(
        [*orphan_guard, sys.executable, "-m", "nbgrader", *args],
        cwd=course_dir,
        env=env or grading_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return subprocess.CompletedProcess(proc.args, -9, out, "")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
    if check and done.returncode != 0:
        tail = "\n".join(out.strip().splitlines()[-15:])
        raise CourseError(f"`nbgrader {' '.join(args)}` failed in {course_dir}:\n{tail}")
    return done


@functools.cache
def master_notebook(lab: str):
    """The lab's master notebook, read once per process (callers only read it)."""
    return nbformat.read(SOURCE / lab / f"{lab}.ipynb", as_version=4)


def gradebook(course: Path):
    from nbgrader.api import Gradebook

    return Gradebook(f"sqlite:///{course / 'gradebook.db'}")
