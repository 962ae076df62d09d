"""Grading on a Dask cluster (`labutils grade --scheduler ADDRESS`, `--cluster local:N`), on a LocalCluster
of two single-threaded worker processes.

A small class of lab 00 is graded once while one worker's process is killed in the middle of a task: every
student still ends with exactly one result, and every check's score is the one the local workers gave the
same notebook (the class run of tests/conftest.py's `graded_class`), and the one the mistake catalogue
states. A second run submits nothing.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import nbformat
import pytest

from peft_grader import catalogue, grading

pytestmark = pytest.mark.slow
LAB = "00_setup"


def _class(folder) -> dict[str, tuple[str, float | None]]:
    """The reference, a mistake and a correct variant as students: (the same notebook's student in the
    catalogue class, the score the catalogue states) for each."""
    entries = {e.name: e for e in catalogue.entries(LAB)}
    mistake = next(e for e in entries.values() if not e.name.startswith("correct_"))
    variant = next(e for e in entries.values() if e.name.startswith("correct_"))
    expected = {}
    for student, entry in (("ada", None), ("bo", mistake), ("cy", variant)):
        (folder / student).mkdir(parents=True)
        nbformat.write(
            catalogue.submission(LAB, entry.cells if entry else None), folder / student / f"{LAB}.ipynb"
        )
        expected[student] = (f"{LAB}--{entry.name}" if entry else "reference", entry.score if entry else None)
    return expected


def _kill_a_busy_worker(client, out_dir, done: threading.Event) -> list[tuple[int, list[str]]]:
    """Once a submission is being graded, kill the worker process grading it (its nanny starts a new one)."""
    killed = []
    while not done.is_set() and not killed:
        busy = [worker for worker, keys in client.processing().items() if keys]
        if busy and any((out_dir / ".work" / LAB).glob("*/submitted")):
            time.sleep(3)  # well inside the task: nbgrader is running the notebook
            pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            time.sleep(5)  # what the dead worker started has had time to die with it
            killed.append((pid, _orphans(out_dir)))
        time.sleep(0.5)
    return killed


def _orphans(folder) -> list[str]:
    """Processes working in `folder` that no longer descend from this test (their worker died): the killed
    worker's nbgrader and kernel, had they outlived it."""
    import psutil

    me, found = os.getpid(), []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.cwd().startswith(str(folder)) and me not in [p.pid for p in proc.parents()]:
                found.append(" ".join(proc.cmdline())[:120])
        except (psutil.Error, OSError):
            continue
    return found


def test_a_class_graded_on_dask_survives_a_lost_worker_and_resumes(tmp_path, capsys, graded_class):
    distributed = pytest.importorskip("distributed")
    expected = _class(tmp_path / "subs")
    local = {(r.student, r.lab): r for r in graded_class.results}
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        done, killed = threading.Event(), []
        killer = threading.Thread(
            target=lambda: killed.extend(_kill_a_busy_worker(client, tmp_path / "out", done))
        )
        killer.start()
        try:
            results = grading.grade(tmp_path / "subs", tmp_path / "out", cluster=cluster.scheduler_address)
        finally:
            done.set()
            killer.join()
        assert killed, "no worker was killed mid-task: the test proved nothing"
        [(_, orphans)] = killed
        assert not orphans, f"the killed worker's grading outlived it: {orphans}"
        assert sorted(r.student for r in results) == ["ada", "bo", "cy"]  # exactly one result each
        for r in results:
            twin, stated = expected[r.student]
            assert not r.reason, (r.student, r.reason)
            assert r.score == (stated if stated is not None else r.max_score), r.student
            by_local_workers = local[twin, LAB]
            assert [(c.name, c.score) for c in r.checks] == [
                (c.name, c.score) for c in by_local_workers.checks
            ]
        saved = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert sorted(s["student"] for s in saved) == ["ada", "bo", "cy"]

        capsys.readouterr()
        again = grading.grade(tmp_path / "subs", tmp_path / "out", cluster=cluster.scheduler_address)
        assert "graded " not in capsys.readouterr().out, "an unchanged class was submitted again"
        assert [(r.student, r.score) for r in again] == [(r.student, r.score) for r in results]


def test_bad_cluster_settings_are_one_readable_message(tmp_path):
    from labutils.errors import CourseError

    _class(tmp_path / "subs")
    with pytest.raises(CourseError, match="local:N"):
        grading.grade(tmp_path / "subs", tmp_path / "out", cluster="local:many")
