"""Grading a class (`labutils grade`) and a learner's self-check (`labutils check`).

Each submission runs in its own scratch course and sandboxed kernel (`workers` at a time); the results go
into one class gradebook, then nbgrader writes the feedback and the grades CSV.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import as_completed as futures_completed
from dataclasses import asdict
from pathlib import Path

from labutils.errors import CourseError
from labutils.profiles import current_profile
from peft_grader.intake import collect, digest, foreign, lab_of, read_notebook, submission, submitted_labs
from peft_grader.nbcourse import GRADER, grader_version, labs, make_course, nbgrader
from peft_grader.pipeline import Job, grade_one
from peft_grader.sandbox_execute import compile_checks
from peft_grader.scores import LabResult, ensure_students, lab_points, load_result, merge, write_atomically


def class_folders(submissions: Path, out_dir: Path) -> tuple[Path, ...]:
    """What a graded kernel must not see besides the grading folder: the submissions given to grade, and a
    class hub's folder (a folder with hub.json) that holds them or the grading folder: every student's
    home, the hub's settings and issued passwords, the course's masters."""
    folders = {Path(submissions).resolve()}
    for start in (Path(submissions).resolve(), Path(out_dir).resolve()):
        folders |= {p for p in [start, *start.parents] if (p / "hub.json").is_file()}
    # never a folder the kernel runs from (submissions given as the clone itself, say)
    needed = [GRADER.parent, Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()]
    return tuple(sorted(f for f in folders if f.is_dir() and not any(n.is_relative_to(f) for n in needed)))


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
    cluster: str | None = None,
    kernels: str = "auto",
) -> list[LabResult]:
    """Autograde every <student>/<lab>.ipynb (or <student>/<lab>/<lab>.ipynb, as nbgrader collects); each
    student ends with a score or a stated reason.

    Each submission runs in its own scratch course and sandboxed kernel (`workers` at a time, or one Dask
    task each on `cluster`: "local:N" for a LocalCluster of N workers, or a scheduler's address), its
    result is saved as soon as it is known, and a re-run skips unchanged submissions already graded
    (resumable and idempotent; `force` regrades). Scores then go into one class gradebook, written here
    only: the workers return plain results.

    `kernels`: "warm" forks each sandboxed kernel from a process that has imported the libraries once
    (peft_grader.warm), "cold" starts each one afresh under bubblewrap, "auto" is warm where this machine
    allows it.
    """
    from peft_grader import sandbox as sandboxing
    from peft_grader import warm

    if kernels not in ("auto", "warm", "cold"):
        raise CourseError(f"kernels={kernels!r}: give auto, warm or cold.")
    if kernels == "warm" and (why := warm.available()):
        raise CourseError(f"{why}. Fix: grade as root on Linux, or with cold kernels (--cold-kernels).")
    use_warm = sandbox and kernels != "cold" and not warm.available()

    if cluster and cluster.startswith("local:"):
        _local_size(cluster)  # a bad setting fails before any work
    out_dir = Path(out_dir).resolve()
    course = make_course(out_dir, timeout=timeout)
    folder = collect(Path(submissions), out_dir)
    students = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    if not students:
        raise CourseError(f"no student folders in {folder}. Fix: lay it out as <student>/<lab>.ipynb.")
    submitted = set().union(*(submitted_labs(folder, s) for s in students))
    todo = [lab for lab in (only or labs()) if lab in submitted]
    if not todo:
        raise CourseError(
            f"no submission in {folder} matches a course lab. "
            f"Fix: name each notebook after its lab, e.g. 04_qlora.ipynb (labs: {', '.join(labs())})."
        )
    if sandbox and not quiet:
        for warning in sandboxing.capabilities()["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
        if kernels == "auto" and warm.available():
            print(
                f"note: {warm.available()}; each kernel starts cold (slower, the same isolation)",
                file=sys.stderr,
            )
    if current_profile() == "tiny":
        from labutils.models import build_all

        build_all(quiet=quiet)  # before any kernel runs: sandboxed kernels cannot write the model cache

    compiled = Path(tempfile.mkdtemp(prefix="peft-checks-")) if sandbox else None
    if compiled:
        compile_checks(compiled)
    hidden = class_folders(Path(submissions), out_dir)  # once for the class, not per submission
    n_workers = workers or os.cpu_count() or 1
    # torch threads per kernel: this machine's cores shared among the workers; on a cluster, one per task
    threads = 1 if cluster else max(1, (os.cpu_count() or 1) // n_workers)
    points, jobs, done = {}, [], {}
    for lab in todo:  # every lab's assignment first, so one pool of workers grades the whole class
        nbgrader(course, "generate_assignment", lab, "--force")
        points[lab] = lab_points(course, lab)
        template = out_dir / ".work" / f"{lab}.gradebook.db"
        template.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(course / "gradebook.db", template)
        for student in students:
            src = submission(folder, student, lab)
            saved = out_dir / "results" / lab / f"{student}.json"
            result = LabResult(student, lab, max_score=points[lab][0], manual_points=points[lab][1])
            if not src.exists():
                result.reason = "missing submission"
            elif problem := read_notebook(src) or foreign(src, lab):
                result.reason = problem
            elif not force and saved.exists() and json.loads(saved.read_text()).get("digest") == digest(src):
                result = load_result(saved)  # graded before, unchanged since: resume
            else:
                jobs.append(
                    Job(
                        lab,
                        student,
                        src,
                        out_dir,
                        template,
                        timeout,
                        budget,
                        sandbox,
                        threads,
                        compiled,
                        use_warm,
                        hidden,
                    )
                )
                continue
            done[lab, student] = result
    with _workers(n_workers, cluster, bool(jobs)) as (submit, completed):
        futures = {submit(grade_one, job, task_key(job)): job for job in jobs}
        for future in completed(futures):  # merged and saved as each finishes (a worker never idles)
            job, result = futures[future], future.result()
            result.max_score, result.manual_points = points[job.lab]
            result.digest = digest(job.src)
            if not quiet:
                print(
                    f"graded {job.lab} for {job.student}: {result.score:g}/{result.max_score:g} {result.reason}",
                    flush=True,
                )
            merge(course, result, out_dir / ".work" / job.lab / job.student)
            write_atomically(
                out_dir / "results" / job.lab / f"{job.student}.json", json.dumps(asdict(result), indent=1)
            )
            shutil.rmtree(out_dir / ".work" / job.lab / job.student, ignore_errors=True)
            done[job.lab, job.student] = result
    if compiled:
        shutil.rmtree(compiled, ignore_errors=True)
    ensure_students(course, students)  # so the grades CSV lists those with nothing to grade too
    results = [done[lab, s] for lab in todo for s in students]
    for lab in todo:
        nbgrader(course, "generate_feedback", lab, "--force", check=False)
    nbgrader(course, "export", "--to", str(out_dir / "grades.csv"), check=False)
    write_atomically(out_dir / "summary.json", json.dumps([asdict(r) for r in results], indent=2))
    from peft_grader.report import write_html

    write_html(results, out_dir)
    return results


def task_key(job: Job) -> str:
    """A submission's Dask task: named by its content and the grader's version, so a task that a lost
    worker leaves behind is the same task when it is retried, and a changed grader is a new one."""
    return f"grade-{job.lab}-{job.student}-{digest(job.src)[:16]}-{grader_version()}"


def _local_size(cluster: str) -> int:
    size = cluster.removeprefix("local:")
    if not size.isdigit() or int(size) < 1:
        raise CourseError(f"--cluster {cluster!r}: give local:N with N workers, e.g. local:4.")
    return int(size)


@contextlib.contextmanager
def _workers(n_workers: int, cluster: str | None, needed: bool):
    """(submit, as_completed) over threads of this process, or over a Dask cluster's workers."""
    if not cluster or not needed:  # nothing to grade: no cluster is started or contacted
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            yield (lambda fn, job, key: pool.submit(fn, job)), futures_completed
        return
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as err:
        raise CourseError(
            "grading on a Dask cluster needs dask's distributed. Fix: make setup (or pip install -e '.[grader]')."
        ) from err
    with contextlib.ExitStack() as stack:
        if cluster.startswith("local:"):
            # one single-threaded worker process per submission at a time; the dashboard is not needed
            target = stack.enter_context(
                LocalCluster(
                    n_workers=_local_size(cluster),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
            )
        else:
            target = cluster
        try:
            client = stack.enter_context(Client(target, timeout="30s"))
        except OSError as err:
            raise CourseError(
                f"could not reach the Dask scheduler at {cluster} ({err}). Fix: start it (`dask scheduler`) "
                "and give its address, e.g. --scheduler tcp://host:8786, or use --cluster local:N."
            ) from err
        yield (lambda fn, job, key: client.submit(fn, job, key=key, retries=1)), as_completed


def self_check(notebook: Path, timeout: int | None = None) -> int:
    notebook = Path(notebook)
    if not notebook.is_file():
        raise CourseError(f"{notebook} does not exist. Fix: give the path of your saved lab notebook.")
    if problem := read_notebook(notebook):
        raise CourseError(
            f"{notebook}: {problem}. Fix: save it from JupyterLab again, or start over from notebooks/."
        )
    lab = lab_of(notebook)
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
