"""The grading pipeline: nbgrader does the work, this module wires it into three commands.

- `labutils release`: regenerate the learner release in notebooks/ from grader/source/.
- `labutils grade SUBMISSIONS`: autograde a class (a folder of <student>/<lab>.ipynb, or a zip),
  write feedback HTML and a grades CSV, and print a summary per student and per check.
- `labutils check NOTEBOOK`: a learner's self-check against the hidden checks.

Every run uses its own nbgrader course folder (the repo's grader/nbgrader_config.py with the root
moved there), so grading never writes into the repository and works from any directory.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from labutils.errors import CourseError
from labutils.profiles import current_profile

REPO = Path(__file__).resolve().parents[2]
GRADER = REPO / "grader"
SOURCE = GRADER / "source"
NOTEBOOKS = REPO / "notebooks"
MESSAGE_CHARS = 1000  # a whole check message (they name the mistake, then the fix), not a traceback


def labs() -> list[str]:
    """The labs that have a master notebook, in course order."""
    return sorted(p.parent.name for p in SOURCE.glob("*/*.ipynb") if p.stem == p.parent.name)


# ---------------------------------------------------------------- nbgrader plumbing
def _env() -> dict[str, str]:
    env = dict(os.environ)
    # nbgrader shells out to alembic when it creates a gradebook: the interpreter's bin must be on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def make_course(
    course_dir: Path, timeout: int | None = None, sandbox: bool = False, budget: float = 0
) -> Path:
    """An nbgrader course folder that loads the repo's config and keeps everything it writes inside."""
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
    if sandbox:
        lines += [
            "from nbgrader.converters.autograde import Autograde",
            "from nbgrader.preprocessors import Execute",
            "from labutils.sandbox_execute import SandboxExecute",
            "c.Autograde.autograde_preprocessors = [",
            "    SandboxExecute if p is Execute else p",
            "    for p in Autograde.class_traits()['autograde_preprocessors'].default()]",
            "# The kernel lives in its own network namespace: talk to it over unix sockets, not TCP.",
            "c.KernelManager.transport = 'ipc'",
            f"c.SandboxExecute.budget = {float(budget)}",
        ]
    (course_dir / "nbgrader_config.py").write_text("\n".join(lines) + "\n")
    return course_dir


def nbgrader(
    course_dir: Path, *args: str, check: bool = True, env: dict | None = None, budget: float | None = None
) -> subprocess.CompletedProcess:
    """Run nbgrader in course_dir; past `budget` seconds its whole process tree is killed (returncode -9)."""
    import importlib.util

    if importlib.util.find_spec("nbgrader") is None:
        raise CourseError("nbgrader is not installed. Fix: `make setup`, or pip install -e '.[grader]'.")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course_dir,
        env=env or _env(),
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


# ---------------------------------------------------------------- release
def release(
    out_dir: Path = NOTEBOOKS, only: list[str] | None = None, repository: str | None = None
) -> list[Path]:
    """Generate the learner notebooks (no solutions, no hidden tests) into out_dir, their Colab badges
    and set-up cells pointing at `repository` (OWNER/NAME; default: the course's setting)."""
    from labutils.course import point_links
    from labutils.course import repository as setting

    slug, written = repository or setting(), []
    with tempfile.TemporaryDirectory(prefix="peft-release-") as tmp:
        course = make_course(Path(tmp))
        for lab in only or labs():
            nbgrader(course, "generate_assignment", lab, "--force")
            target = Path(out_dir) / f"{lab}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(point_links((course / "release" / lab / f"{lab}.ipynb").read_text(), slug))
            written.append(target)
    return written


# ---------------------------------------------------------------- grading
@dataclass
class CheckResult:
    name: str
    score: float
    max_score: float
    message: str = ""


@dataclass
class LabResult:
    student: str
    lab: str
    score: float = 0.0
    max_score: float = 0.0
    reason: str = ""  # why there is no (full) autograde, e.g. a missing or unreadable submission
    manual_points: float = 0.0  # points of markdown answers an instructor grades in formgrader
    checks: list[CheckResult] = field(default_factory=list)
    review: str = ""  # what an instructor may want to look at; it cost no points (e.g. a %run magic)
    digest: str = ""  # sha256 of the graded file: an unchanged submission is not graded twice
    seconds: float = 0.0  # wall time of this submission's grading (sandbox, autograde, outside checks)


def _load_result(path: Path) -> LabResult:
    data = json.loads(path.read_text())
    return LabResult(**{**data, "checks": [CheckResult(**c) for c in data["checks"]]})


def _collect(submissions: Path, work: Path) -> Path:
    """A folder of <student>/<lab>.ipynb (unzipped first if a zip was given)."""
    submissions = Path(submissions)
    if not submissions.exists():
        raise CourseError(
            f"{submissions} does not exist. Fix: pass a folder of <student>/<lab>.ipynb or a zip of one."
        )
    if submissions.is_file():
        if not zipfile.is_zipfile(submissions):
            raise CourseError(
                f"{submissions} is neither a folder nor a zip file. "
                "Fix: pass a folder of <student>/<lab>.ipynb or a zip of one."
            )
        target = work / "unzipped"
        with zipfile.ZipFile(submissions) as zf:
            for member in zf.namelist():  # refuse paths that would escape the target folder
                if member.startswith("/") or ".." in Path(member).parts:
                    raise CourseError(
                        f"{submissions} holds an unsafe path: {member}. "
                        "Fix: zip the submissions folder again, with relative paths only."
                    )
            zf.extractall(target)
        entries = [p for p in target.iterdir() if not p.name.startswith(("__MACOSX", "."))]
        # a zip of one top folder holding the students
        if len(entries) == 1 and entries[0].is_dir() and not list(entries[0].glob("*.ipynb")):
            return entries[0]
        return target
    return submissions


def _read_notebook(path: Path) -> str:
    """'' if the file is a notebook nbgrader can read, else the reason it is not."""

    try:
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported, not raised
        return f"not a readable notebook ({type(err).__name__}: {str(err)[:120]})"
    if nb.get("nbformat", 0) < 4:
        return f"notebook format {nb.get('nbformat')} is too old; save it with Jupyter 4+"
    if not nb.cells:
        return "the notebook is empty"
    return ""


def _messages(autograded: Path) -> dict[str, str]:
    """The error message of each failing graded cell in an autograded notebook."""

    nb = nbformat.read(autograded, as_version=4)
    found = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if not meta.get("grade") or cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                text = (
                    f"{out.get('ename')}: {out.get('evalue')}" if out.get("evalue") else out.get("ename", "")
                )
                found[meta["grade_id"]] = text[:MESSAGE_CHARS]
    return found


@functools.cache
def _master(lab: str):
    """The lab's master notebook, read once per process (callers only read it)."""
    return nbformat.read(SOURCE / lab / f"{lab}.ipynb", as_version=4)


def _gradebook(course: Path):
    from nbgrader.api import Gradebook

    return Gradebook(f"sqlite:///{course / 'gradebook.db'}")


def _restored_ids(lab: str) -> set[str]:
    """grade_ids of the master's locked cells: nbgrader restores them, so learners cannot change them."""
    master = _master(lab)
    return {
        c.metadata["nbgrader"]["grade_id"]
        for c in master.cells
        if c.metadata.get("nbgrader", {}).get("locked")
    }


def _repair_structure(nb, lab: str) -> None:
    """Put the master's cells back in the master's order, before nbgrader sees the notebook.

    nbgrader restores the content of locked and test cells but not where they stand, so a test moved
    below a late fix would pass. Each master cell moves back to its place with the learner's own cells
    that followed it; copies of a master cell become plain cells (nbgrader 0.9.6 crashes on them).
    """
    order = {
        c.metadata["nbgrader"]["grade_id"]: i
        for i, c in enumerate(_master(lab).cells)
        if "nbgrader" in c.metadata
    }
    groups, seen = [[-1, []]], set()
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in seen:
            del cell.metadata["nbgrader"]
        elif gid in order:
            seen.add(gid)
            groups.append([order[gid], []])
        groups[-1][1].append(cell)
    nb.cells = [cell for _, cells in sorted(groups, key=lambda g: g[0]) for cell in cells]


def _foreign(path: Path, lab: str) -> str:
    """'' if the notebook has cells of this lab, else why it cannot be this lab's submission."""
    master = _master(lab)
    ids = {c.metadata.get("nbgrader", {}).get("grade_id") for c in nbformat.read(path, as_version=4).cells}
    if ids & {c.metadata.get("nbgrader", {}).get("grade_id") for c in master.cells} - {None}:
        return ""
    return f"not this lab's notebook: it has none of the cells of {lab} (another lab's file?)"


def cell_seconds(notebook: Path) -> dict[str, float]:
    """Wall seconds of each executed cell (grade_id, else #position), from nbclient's timing metadata."""
    from datetime import datetime

    def moment(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    found = {}
    for i, cell in enumerate(nbformat.read(notebook, as_version=4).cells):
        timing = cell.metadata.get("execution", {})
        if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            name = cell.metadata.get("nbgrader", {}).get("grade_id") or f"#{i + 1}"
            found[name] = (
                moment(timing["shell.execute_reply"]) - moment(timing["iopub.execute_input"])
            ).total_seconds()
    return found


def _errors_named(autograded: Path, ename: str) -> list[str]:
    """Cells (by grade_id, else position) that ended in this error, e.g. the sandbox's KernelRestarted."""
    nb = nbformat.read(autograded, as_version=4)
    return [
        cell.metadata.get("nbgrader", {}).get("grade_id") or f"#{i + 1}"
        for i, cell in enumerate(nb.cells)
        if any(o.get("ename") == ename for o in cell.get("outputs", []))
    ]


def _read_gradebook(course: Path, lab: str, student: str, result: LabResult) -> None:
    """The autograded cells' scores; markdown answer cells wait for manual grading in formgrader."""
    from nbgrader.api import MissingEntry

    with _gradebook(course) as gb:
        try:
            sub = gb.find_submission(lab, student)
        except MissingEntry:
            return
        grades = [g for nb in sub.notebooks for g in sorted(nb.grades, key=lambda g: g.name)]
        result.checks = [
            CheckResult(g.name, g.score or 0.0, g.max_score) for g in grades if g.cell.cell_type == "code"
        ]
        result.score = sum(c.score for c in result.checks)


def _points(course: Path, lab: str) -> tuple[float, float]:
    """The lab's autograded points and its manually graded points."""
    with _gradebook(course) as gb:
        cells = [
            (c.cell_type, c.max_score) for nb in gb.find_assignment(lab).notebooks for c in nb.grade_cells
        ]
    auto = sum(points for kind, points in cells if kind == "code")
    return auto, sum(points for _, points in cells) - auto


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


@dataclass
class _Job:
    lab: str
    student: str
    src: Path
    out_dir: Path
    gradebook: Path  # the class gradebook right after generate_assignment: each scratch course starts from it
    timeout: int | None
    budget: float
    sandbox: bool
    threads: int  # CPU threads for the kernel's torch: the machine's cores shared among the workers
    checks: Path | None = None  # the hidden checks as bytecode only, for sandboxed kernels (_compile_checks)


def _compile_checks(folder: Path) -> Path:
    """grader/checks as a package of .pyc files without their source, under folder/checks.

    Sandboxed kernels import the checks from here and cannot see grader/checks, so no cell can print
    the checks' source into its output (and so into the feedback), and no traceback can quote it.
    """
    import py_compile

    target = Path(folder) / "checks"
    target.mkdir(parents=True)
    for source in sorted((GRADER / "checks").glob("*.py")):
        py_compile.compile(str(source), cfile=str(target / f"{source.stem}.pyc"), doraise=True)
    return Path(folder)


OUTSIDE_TIMEOUT_S = 300


@functools.cache
def _outside_checks(lab: str) -> frozenset[str]:
    """The grade ids of `lab` that checks.outside decides (checks.ON_DISK and checks.FROM_EVIDENCE), read
    from grader/checks/__init__.py (standard library only) without importing the checks package into
    this process or touching sys.path, which the grading threads share."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_course_checks", GRADER / "checks" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return frozenset(module.ON_DISK.get(lab, ({}, {}))[1]) | frozenset(module.FROM_EVIDENCE.get(lab, {}))


@functools.cache
def _hardware_json() -> str:
    """The grading machine's hardware for the outside checks (checks.judges.HARDWARE_VAR), detected once."""
    from labutils.doctor import detect_hardware

    hw = detect_hardware()
    return json.dumps({k: hw[k] for k in ("cuda_available", "bf16_supported", "device_name")})


def _outside_verdicts(lab: str, folder: Path) -> dict[str, str]:
    """Re-run the lab's on-disk checks in a fresh process: what the learner's kernel cannot tamper with.

    Fails closed: if the process crashes or times out, every outside check of the lab gets a failure
    ("could not be verified"), never a pass."""
    expected = _outside_checks(lab)
    if not expected:
        return {}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "checks.outside", lab, str(folder)],
            env=_env() | {"PYTHONPATH": str(GRADER), "PEFT_COURSE_HARDWARE": _hardware_json()},
            capture_output=True,
            text=True,
            timeout=OUTSIDE_TIMEOUT_S,
        )
        found = (
            json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 and proc.stdout else None
        )
        why = (
            "" if found is not None else (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        )
    except subprocess.TimeoutExpired:
        found, why = None, f"timed out after {OUTSIDE_TIMEOUT_S} s"
    except (json.JSONDecodeError, IndexError) as err:
        found, why = None, f"unreadable answer ({err})"
    unverified = (
        f"could not be verified outside the notebook ({why[:200]}). Fix: grade this submission again; "
        "if it persists, the instructor should look at grading/logs."
    )
    return {grade_id: (found or {}).get(grade_id, unverified) for grade_id in expected}


def _grade_one(job: _Job) -> LabResult:
    """Autograde one submission in its own scratch course, so it can reach nothing but its own folder."""
    from labutils import sandbox, tamper

    started = time.perf_counter()
    result = LabResult(job.student, job.lab)
    scratch = job.out_dir / ".work" / job.lab / job.student
    shutil.rmtree(scratch, ignore_errors=True)
    make_course(scratch, timeout=job.timeout, sandbox=job.sandbox, budget=job.budget)
    shutil.copyfile(job.gradebook, scratch / "gradebook.db")
    dest = scratch / "submitted" / job.student / job.lab
    dest.mkdir(parents=True)
    nb = nbformat.read(job.src, as_version=4)
    _repair_structure(nb, job.lab)
    removed, flagged = tamper.sanitize(nb, _restored_ids(job.lab))
    if removed:
        result.reason = f"tampering removed before grading: {'; '.join(removed[:3])}"
    if flagged:
        result.review = f"flagged for review (ran as written): {'; '.join(flagged[:3])}"
    nbformat.write(nb, dest / f"{job.lab}.ipynb")
    # Oversubscribed torch threads (every kernel using every core) make parallel grading many times slower.
    threads = str(job.threads)
    env = _env() | {
        "JUPYTER_PATH": str(scratch / "jupyter"),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    # ipc sockets need a short absolute path (unix sockets allow ~100 characters) outside the notebook.
    sockets = Path(tempfile.mkdtemp(prefix="peft-k-"))
    with (scratch / "nbgrader_config.py").open("a") as config:
        config.write(f"c.KernelManager.ip = {str(sockets / 'k')!r}\n")
    if job.sandbox:
        from labutils.models import cache_dir

        hidden = [job.out_dir, SOURCE, GRADER / "mistakes", GRADER / "adversarial", GRADER / "checks"]
        readable = [p for p in (cache_dir(),) if p.exists() and p.resolve().is_relative_to(job.out_dir)]
        if job.checks:  # after the hidden, empty grader/checks on PYTHONPATH, which imports skip
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(job.checks), env.get("PYTHONPATH")) if p)
        sandbox.write_kernelspec(scratch / "jupyter", writable=[], hidden=hidden, readable=readable)
    proc = nbgrader(
        scratch,
        "autograde",
        job.lab,
        "--student",
        job.student,
        "--force",
        check=False,
        env=env,
        budget=job.budget * 1.5 + 120,  # a backstop: SandboxExecute stops running cells at job.budget
    )
    shutil.rmtree(sockets, ignore_errors=True)
    _write_atomically(job.out_dir / "logs" / job.lab / f"{job.student}.log", proc.stdout or "")
    _read_gradebook(scratch, job.lab, job.student, result)
    autograded = scratch / "autograded" / job.student / job.lab
    if proc.returncode == -9:
        result.reason = f"killed long after the wall budget of {job.budget:g} s: the notebook never finished"
    elif proc.returncode != 0 or not (autograded / f"{job.lab}.ipynb").exists():
        last = (proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        result.reason = f"autograde failed: {last[0][:200]}"
    if (autograded / f"{job.lab}.ipynb").exists():
        messages = _messages(autograded / f"{job.lab}.ipynb")
        if _errors_named(autograded / f"{job.lab}.ipynb", "WallBudgetExceeded") and not result.reason:
            result.reason = f"stopped at the wall budget of {job.budget:g} s: later cells were not run"
        if blocked := _errors_named(autograded / f"{job.lab}.ipynb", "TamperingBlocked"):
            result.reason = result.reason or f"tampering blocked while grading in cell {blocked[0]}"
        if (
            restarted := _errors_named(autograded / f"{job.lab}.ipynb", "KernelRestarted")
        ) and not result.reason:
            result.reason = (
                f"the kernel died or ignored an interrupt in cell {restarted[0]} and was restarted; "
                "later cells ran without the earlier state"
            )
        outside = _outside_verdicts(job.lab, autograded)
        for check in result.checks:
            if check.score >= check.max_score and outside.get(check.name):
                # passed inside the learner's kernel, failed from outside: the kernel was tampered with
                check.score, check.message = 0.0, f"[verified outside the notebook] {outside[check.name]}"
            elif check.score < check.max_score:
                check.message = messages.get(check.name, "")
        result.score = sum(c.score for c in result.checks)
    result.seconds = time.perf_counter() - started
    return result


def _merge(course: Path, result: LabResult, scratch: Path) -> None:
    """Copy one student's autograded work and scores into the class gradebook (the trusted side)."""
    from nbgrader.api import MissingEntry

    autograded = scratch / "autograded" / result.student / result.lab
    if autograded.exists():
        target = course / "autograded" / result.student / result.lab
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(autograded, target, ignore=shutil.ignore_patterns(".sandbox"))
    submitted = scratch / "submitted" / result.student / result.lab
    if submitted.exists():
        shutil.copytree(submitted, course / "submitted" / result.student / result.lab, dirs_exist_ok=True)
    with _gradebook(course) as gb, warnings.catch_warnings():
        # nbgrader 0.9.6's remove_submission trips SQLAlchemy's autoflush warnings: noise, not data loss
        warnings.simplefilter("ignore")
        gb.update_or_create_student(result.student)
        try:
            gb.remove_submission(result.lab, result.student)
        except MissingEntry:
            pass
        gb.add_submission(result.lab, result.student)
        for check in result.checks:
            gb.find_grade(check.name, result.lab, result.lab, result.student).auto_score = check.score
        gb.db.commit()


def _ensure_students(course: Path, students: list[str]) -> None:
    with _gradebook(course) as gb:
        for student in students:
            gb.update_or_create_student(student)


def grade(
    submissions: Path,
    out_dir: Path,
    only: list[str] | None = None,
    timeout: int | None = None,
    quiet: bool = False,
    workers: int | None = None,
    budget: float = 900,
    force: bool = False,
    sandbox: bool = True,
) -> list[LabResult]:
    """Autograde every <student>/<lab>.ipynb; each student ends with a score or a stated reason.

    Each submission runs in its own scratch course and sandboxed kernel (`workers` at a time), its
    result is saved as soon as it is known, and a re-run skips unchanged submissions already graded
    (resumable and idempotent; `force` regrades). Scores then go into one class gradebook.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from labutils import sandbox as sandboxing

    out_dir = Path(out_dir).resolve()
    course = make_course(out_dir, timeout=timeout)
    folder = _collect(Path(submissions), out_dir)
    students = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    if not students:
        raise CourseError(f"no student folders in {folder}. Fix: lay it out as <student>/<lab>.ipynb.")
    submitted_labs = {p.stem for s in students for p in (folder / s).glob("*.ipynb")}
    todo = [lab for lab in (only or labs()) if lab in submitted_labs]
    if not todo:
        raise CourseError(
            f"no submission in {folder} matches a course lab. "
            f"Fix: name each notebook after its lab, e.g. 04_qlora.ipynb (labs: {', '.join(labs())})."
        )
    if sandbox and not quiet:
        for warning in sandboxing.capabilities()["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
    if current_profile() == "tiny":
        from labutils.models import build_all

        build_all(quiet=quiet)  # before any kernel runs: sandboxed kernels cannot write the model cache

    compiled = Path(tempfile.mkdtemp(prefix="peft-checks-")) if sandbox else None
    if compiled:
        _compile_checks(compiled)
    n_workers = workers or os.cpu_count() or 1
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    points, jobs, done = {}, [], {}
    for lab in todo:  # every lab's assignment first, so one pool of workers grades the whole class
        nbgrader(course, "generate_assignment", lab, "--force")
        points[lab] = _points(course, lab)
        template = out_dir / ".work" / f"{lab}.gradebook.db"
        template.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(course / "gradebook.db", template)
        for student in students:
            src = folder / student / f"{lab}.ipynb"
            saved = out_dir / "results" / lab / f"{student}.json"
            result = LabResult(student, lab, max_score=points[lab][0], manual_points=points[lab][1])
            if not src.exists():
                result.reason = "missing submission"
            elif problem := _read_notebook(src) or _foreign(src, lab):
                result.reason = problem
            elif not force and saved.exists() and json.loads(saved.read_text()).get("digest") == _digest(src):
                result = _load_result(saved)  # graded before, unchanged since: resume
            else:
                jobs.append(
                    _Job(lab, student, src, out_dir, template, timeout, budget, sandbox, threads, compiled)
                )
                continue
            done[lab, student] = result
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        futures = {pool.submit(_grade_one, job): job for job in jobs}
        for future in as_completed(futures):  # merged and saved as each finishes (a worker never idles)
            job, result = futures[future], future.result()
            result.max_score, result.manual_points = points[job.lab]
            result.digest = _digest(job.src)
            if not quiet:
                print(
                    f"graded {job.lab} for {job.student}: {result.score:g}/{result.max_score:g} {result.reason}",
                    flush=True,
                )
            _merge(course, result, out_dir / ".work" / job.lab / job.student)
            _write_atomically(
                out_dir / "results" / job.lab / f"{job.student}.json", json.dumps(asdict(result), indent=1)
            )
            shutil.rmtree(out_dir / ".work" / job.lab / job.student, ignore_errors=True)
            done[job.lab, job.student] = result
    if compiled:
        shutil.rmtree(compiled, ignore_errors=True)
    _ensure_students(course, students)  # so the grades CSV lists those with nothing to grade too
    results = [done[lab, s] for lab in todo for s in students]
    for lab in todo:
        nbgrader(course, "generate_feedback", lab, "--force", check=False)
    nbgrader(course, "export", "--to", str(out_dir / "grades.csv"), check=False)
    _write_atomically(out_dir / "summary.json", json.dumps([asdict(r) for r in results], indent=2))
    return results


def summary_table(results: list[LabResult], width: int = 132) -> str:
    """Per student and lab: the score and every lost point with its whole message (wrapped, never cut:
    the fix is at the end); then per check: how many passed and failed."""
    student_width = max([len("student"), *(len(r.student) for r in results)])
    head = f"{'student':<{student_width}} {'lab':<18} {'score':>12}  "
    indent = " " * len(head)
    lines = [head + "lost points (+Nm: graded by hand)"]
    for r in results:
        score = f"{r.score:g}/{r.max_score:g}" + (f" +{r.manual_points:g}m" if r.manual_points else "")
        lost = (
            [r.reason]
            if r.reason
            else [
                f"{c.name} -{c.max_score - c.score:g}: {c.message or 'no output'}"
                for c in r.checks
                if c.score < c.max_score
            ]
        )
        first = f"{r.student:<{student_width}} {r.lab:<18} {score:>12}  "
        text_width = max(40, width - len(indent))
        items = (lost or ["-"]) + ([f"review: {r.review}"] if r.review else [])
        wrapped = [textwrap.wrap(item, text_width) or [item] for item in items]
        body = [line for item in wrapped for line in item]
        lines.append(first + body[0])
        lines += [indent + line for line in body[1:]]
    per_check: dict[tuple[str, str], list[int]] = {}
    for r in results:
        for c in r.checks:
            passed_failed = per_check.setdefault((r.lab, c.name), [0, 0])
            passed_failed[c.score < c.max_score] += 1
    lines += ["", f"{'lab':<18} {'check':<24} {'passed':>6} {'failed':>6}"]
    lines += [f"{lab:<18} {name:<24} {p:>6} {f:>6}" for (lab, name), (p, f) in per_check.items()]
    return "\n".join(lines)


# ---------------------------------------------------------------- self-check
def _lab_of(notebook: Path) -> str:
    if notebook.stem in labs():
        return notebook.stem
    for lab in labs():
        if not _foreign(notebook, lab):
            return lab
    raise CourseError(
        f"{notebook} is not one of the course labs. Fix: check a notebook from notebooks/, saved under its "
        f"lab's name ({', '.join(labs())})."
    )


def self_check(notebook: Path, timeout: int | None = None) -> int:
    notebook = Path(notebook)
    if not notebook.is_file():
        raise CourseError(f"{notebook} does not exist. Fix: give the path of your saved lab notebook.")
    if problem := _read_notebook(notebook):
        raise CourseError(
            f"{notebook}: {problem}. Fix: save it from JupyterLab again, or start over from notebooks/."
        )
    lab = _lab_of(notebook)
    with tempfile.TemporaryDirectory(prefix="peft-check-") as tmp:
        sub = Path(tmp) / "submissions" / "you"
        sub.mkdir(parents=True)
        shutil.copyfile(notebook, sub / f"{lab}.ipynb")
        print(
            f"Running {notebook.name} with the hidden checks of {lab} (this executes the whole notebook) ..."
        )
        [result] = grade(
            Path(tmp) / "submissions", Path(tmp) / "course", only=[lab], timeout=timeout, quiet=True
        )
    if result.reason:
        print(f"could not grade: {result.reason}")
        return 1
    for c in result.checks:
        mark = "PASS" if c.score >= c.max_score else "FAIL"
        print(
            f"{mark}  {c.name:<24} {c.score:g}/{c.max_score:g}"
            + (f"\n      {c.message}" if c.message else "")
        )
    print(f"score: {result.score:g}/{result.max_score:g}")
    if result.manual_points:
        print(f"plus {result.manual_points:g} points for written answers, graded by your instructor")
    return 0 if result.score >= result.max_score else 1


# ---------------------------------------------------------------- CLI
def _release_cmd(args: argparse.Namespace) -> int:
    from labutils.course import point_links, repository, set_repository

    if args.repository:
        set_repository(args.repository)
        print(f"repository setting (pyproject.toml [tool.peft-course]): {args.repository}")
    for path in release(Path(args.out), args.labs or None):
        print(f"released {path}")
    workshop = REPO / "WORKSHOP.md"
    if workshop.exists():
        workshop.write_text(point_links(workshop.read_text(), repository()))
        print(f"links in {workshop} point at {repository()}")
    return 0


def _grade_cmd(args: argparse.Namespace) -> int:
    results = grade(
        Path(args.submissions),
        Path(args.out),
        args.labs or None,
        timeout=args.timeout,
        workers=args.workers,
        budget=args.budget,
        force=args.force,
        sandbox=not args.no_sandbox,
    )
    print(summary_table(results))
    print(f"\nfeedback: {Path(args.out) / 'feedback'}\ngrades:   {Path(args.out) / 'grades.csv'}")
    return 0


def _check_cmd(args: argparse.Namespace) -> int:
    return self_check(Path(args.notebook), timeout=args.timeout)


def add_commands(sub) -> None:
    p = sub.add_parser("release", help="regenerate the learner notebooks from grader/source with nbgrader")
    p.add_argument("labs", nargs="*", help="labs to release (default: all)")
    p.add_argument("--out", default=str(NOTEBOOKS), help="where to write the release (default: notebooks/)")
    p.add_argument(
        "--repository",
        metavar="OWNER/NAME",
        help="the GitHub repository the Colab badges and set-up cells point at (saved in pyproject.toml)",
    )
    p.set_defaults(func=_release_cmd)

    p = sub.add_parser("grade", help="autograde a class: a folder of <student>/<lab>.ipynb, or a zip")
    p.add_argument("submissions")
    p.add_argument("--out", default="grading", help="course folder for gradebook, feedback, grades.csv")
    p.add_argument("--labs", nargs="*", help="labs to grade (default: every lab submitted)")
    p.add_argument(
        "--timeout", type=int, help="per-cell timeout in seconds (default: grader/nbgrader_config.py)"
    )
    p.add_argument("--workers", type=int, help="submissions graded at once (default: the machine's cores)")
    p.add_argument("--budget", type=float, default=900, help="wall-clock seconds per notebook (default: 900)")
    p.add_argument("--force", action="store_true", help="regrade submissions already graded and unchanged")
    p.add_argument(
        "--no-sandbox", action="store_true", help="run kernels without bubblewrap/unshare (trusted work only)"
    )
    p.set_defaults(func=_grade_cmd)

    p = sub.add_parser("check", help="self-check a lab notebook against the hidden checks")
    p.add_argument("notebook")
    p.add_argument("--timeout", type=int)
    p.set_defaults(func=_check_cmd)
