"""A class hub where nobody reads what is not theirs (issue 33): real Unix accounts, nbgrader's exchange with
its permission model, a hostile classmate, and a memory limit a student cannot lift.

Two students, `a` and `b` (each test run makes fresh account names and removes them after). `b` fetches lab
00 and submits it with nbgrader, as `b`. Then `a`, as `a`, tries to read and write what is not theirs and to
submit under `b`'s name; every attempt must be refused, and the instructor's collect must file `b`'s own
submission byte for byte and set the forgery aside. Root only: the class makes Unix accounts.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from class_accounts import BIN, HOSTILE, REPO, as_student, class_machine, fresh_names, targets, to_json

from labutils.errors import CourseError
from peft_grader import grading, hub, hub_accounts, hub_spawner

LAB = "00_setup"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a class hub makes Unix accounts: root only")


def edit(lab: str, cell: str, source: str) -> str:
    """A program that adds a cell to the fetched notebook, as a student working in JupyterLab would."""
    added = {"cell_type": cell, "id": f"added-{cell}", "metadata": {}, "source": source}
    if cell == "code":
        added |= {"outputs": [], "execution_count": None}
    path = f"{lab}/{lab}.ipynb"
    return (
        f"import json; nb = json.load(open({path!r})); nb['cells'].append({added!r}); "
        f"json.dump(nb, open({path!r}, 'w'))"
    )


@dataclass
class School:
    root: Path
    a: str
    b: str
    probed: dict  # what a's own account could do: from a notebook or a terminal
    graded_probe: dict  # what a's submission could do while the instructor graded it
    submitted: str  # the digest of b's own submission
    found: list[str]
    refused: list[Path]


@pytest.fixture(scope="module")
def school():
    """A class of two, lab 00 released. `b` fetches it, works and submits. `a` probes what is not theirs
    from their account, submits under `b`'s name, then submits their own work with a cell that probes the
    grading machine. The instructor collects and grades."""
    a, b = fresh_names("pa", "pb")
    root = Path(tempfile.mkdtemp(prefix="peft-class-"))

    def run(student, *args):
        program = BIN / args[0] if (BIN / args[0]).exists() else args[0]  # the course's, or the system's
        done = as_student(student, [str(program), *args[1:]], root)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    with class_machine([a, b], root):
        try:
            hub.prepare(root, [a, b])
            hub_accounts.lock_down(root, REPO)
            hub.release(root, [LAB])
            run(b, "nbgrader", "fetch_assignment", LAB)
            run(b, "python", "-c", edit(LAB, "markdown", "b was here"))  # what b submits is b's own
            run(b, "nbgrader", "submit", LAB)
            submitted = hashlib.sha256((root / "homes" / b / LAB / f"{LAB}.ipynb").read_bytes()).hexdigest()
            aims = targets(root, b)
            missing = [p for p in aims["read"] if not p.exists()]
            assert not missing, f"probes of nothing prove nothing: {missing}"
            probed = json.loads(run(a, "python", "-c", HOSTILE, to_json(aims)).split("PROBE ", 1)[1])
            run(a, "nbgrader", "fetch_assignment", LAB)
            run(a, "nbgrader", "submit", LAB, f"--CourseDirectory.student_id={b}")  # nbgrader issue 1097
            secrets_ = {  # while graded (as root), a's code reaches for the class's secrets
                "read": [root / "hub.json", root / "passwords.csv", root / "homes" / b / LAB / f"{LAB}.ipynb",
                         root / "course" / "nbgrader_config.py", root / "course" / "submitted",
                         root / "grading" / "gradebook.db", REPO / "grader" / "source" / LAB / f"{LAB}.ipynb"],
                "write": [], "list": [], "glob": [], "rename": [],
            }  # fmt: skip
            probe_cell = f"import sys\nsys.argv = ['probe', {to_json(secrets_)!r}]\n{HOSTILE}"
            run(a, "python", "-c", edit(LAB, "code", probe_cell))
            run(a, "nbgrader", "submit", LAB)
            # later still, entries nbgrader's collect would follow (a link to b's work) or stop on (a bad time)
            inbound = root / "exchange" / "peft-course" / "inbound"
            later = f"{inbound}/{a}+{LAB}+2099-01-01 00:00:00.000000 UTC"
            run(a, "sh", "-c", f"mkdir '{later}+x' && ln -s {root}/course/submitted/{b}/{LAB}/{LAB}.ipynb "
                f"'{later}+x/{LAB}.ipynb' && mkdir '{inbound}/{a}+{LAB}+not-a-time+y'")  # fmt: skip
            found = hub.collect(root, [LAB])[LAB]
            refused = sorted((root / "refused").iterdir())
            grading.grade(root / "course", root / "grading", quiet=True, workers=2)
            assert all(p.exists() for p in secrets_["read"])
            feedback = html.unescape((root / "grading" / "feedback" / a / LAB / f"{LAB}.html").read_text())
            graded_probe = json.loads(re.search(r"PROBE (\{.*?\})\s*<", feedback, re.S).group(1))
            yield School(root, a, b, probed, graded_probe, submitted, found, refused)
        finally:
            shutil.rmtree(root, ignore_errors=True)


def test_a_classmate_reads_and_writes_nothing_that_is_not_theirs(school):
    allowed = {what: how for what, how in school.probed.items() if how != "refused"}
    assert not allowed, allowed
    assert len(school.probed) == sum(len(v) for v in targets(school.root, school.b).values())


def test_a_submission_made_under_a_classmates_name_is_set_aside_and_theirs_is_collected(school):
    root, a, b = school.root, school.a, school.b
    assert school.found == sorted([a, b])
    collected = root / "course" / "submitted" / b / LAB / f"{LAB}.ipynb"
    assert hashlib.sha256(collected.read_bytes()).hexdigest() == school.submitted  # b's own, byte for byte
    refused = {
        entry.name.split("+")[0] + "+" + entry.name.split("+")[2][:4]: entry for entry in school.refused
    }
    assert sorted(refused) == sorted(
        [f"{b}+{time.gmtime().tm_year}", f"{a}+2099", f"{a}+not-"]
    )  # kept, not graded
    assert pwd.getpwuid(refused[f"{b}+{time.gmtime().tm_year}"].stat().st_uid).pw_name == "root"  # seized
    collected = root / "course" / "submitted" / a / LAB / f"{LAB}.ipynb"
    assert not collected.is_symlink() and "PROBE" in collected.read_text()  # a's own last honest submission


def test_a_submission_being_graded_reaches_none_of_the_classes_secrets(school):
    assert len(school.graded_probe) == 7
    allowed = {what: how for what, how in school.graded_probe.items() if how != "refused"}
    assert not allowed, allowed


def test_a_home_is_its_students_alone_and_the_instructors_files_are_roots(school):
    root, a, b = school.root, school.a, school.b
    for name in (a, b):
        home = Path(pwd.getpwnam(name).pw_dir)
        assert home.parent == root / "homes" and stat.S_IMODE(home.stat().st_mode) == 0o700
        assert home.stat().st_uid == pwd.getpwnam(name).pw_uid
    for private in ("hub.json", "passwords.csv", "course", "grading"):
        assert stat.S_IMODE((root / private).stat().st_mode) & 0o077 == 0, private
    assert stat.S_IMODE((root / "exchange").stat().st_mode) == 0o1777
    assert stat.S_IMODE((root / "exchange" / "peft-course" / "inbound").stat().st_mode) == 0o3733
    # the student's nbgrader files work under the account's own name, whatever JUPYTERHUB_USER says
    assert "JUPYTERHUB_USER" not in (root / "student-config" / "nbgrader_config.py").read_text()


def test_the_hub_logs_in_each_student_with_their_own_password_only(school):
    import asyncio

    from jupyterhub.auth import PAMAuthenticator

    root, a, b = school.root, school.a, school.b
    passwords = hub_accounts.issued_passwords(root)
    auth = PAMAuthenticator(allowed_groups={hub_accounts.STUDENTS_GROUP})

    def login(name, password):
        return asyncio.run(auth.get_authenticated_user(None, {"username": name, "password": password}))

    assert login(a, passwords[a])["name"] == a
    assert login(b, passwords[a]) is None  # b's name with a's password
    assert login(f"pc{secrets.token_hex(3)}", passwords[a]) is None  # a classmate who has no account yet
    # a new password replaces the old one
    new = hub.password(root, [b])[b]
    assert login(b, passwords[b]) is None and login(b, new)["name"] == b


@pytest.mark.parametrize(
    ("action", "name", "words"),
    [
        (hub.add, "Ada", "lower-case"),
        (hub.add, "a/b", "lower-case"),
        (hub.add, "root", "did not make"),  # an account of the machine: never a student's
        (hub.add, "STUDENT A", "already a student"),  # a duplicate: their work is kept
        (hub.password, "nobody-here", "not a student"),
        (hub.remove, "nobody-here", "not a student"),
    ],
)
def test_bad_student_names_are_one_readable_message(school, action, name, words):
    root, a = school.root, school.a
    with pytest.raises(CourseError, match=words):
        action(root, [a if name == "STUDENT A" else name])


def test_a_student_removed_mid_course_loses_the_login_and_keeps_the_work(school):
    root = school.root
    tag = secrets.token_hex(3)
    name = f"pr{tag}"
    hub.add(root, [name])
    try:
        home = Path(pwd.getpwnam(name).pw_dir)
        work = home / "work.txt"
        assert as_student(name, ["sh", "-c", f"echo mine > {work}"], root).returncode == 0
        hub.remove(root, [name])
        assert not hub_accounts.is_student(name) and work.read_text() == "mine\n"  # kept, for the instructor
        assert stat.S_IMODE(home.stat().st_mode) == 0o700 and home.stat().st_uid == 0
        hub.add(root, [name])  # back in the class: the same home, theirs again
        assert work.read_text() == "mine\n" and work.stat().st_uid == pwd.getpwnam(name).pw_uid
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(hub_accounts.RUNTIME_ROOT / name, ignore_errors=True)


@pytest.mark.skipif(
    hub_spawner.cgroup_version() is None, reason="this machine lets no one make a memory cgroup"
)
def test_a_runaway_kernel_meets_its_students_limit_and_cannot_lift_it(school):
    a = school.a
    group = hub_spawner.memory_cgroup(a, "200M")
    limit_file = group / ("memory.max" if hub_spawner.cgroup_version() == 2 else "memory.limit_in_bytes")
    spawner = hub_spawner.ClassSpawner(mem_limit="200M")
    lift = f"open({str(limit_file)!r}, 'w').write('-1')"
    leave = f"open({str(group.parent / 'cgroup.procs')!r}, 'w').write(str(__import__('os').getpid()))"
    runaway = "x = bytearray(600 * 2**20); x[::4096] = b'1' * len(x[::4096])"
    for code, outcome in ((lift, "PermissionError"), (leave, "PermissionError")):
        done = subprocess.run(
            [sys.executable, "-c", code],
            preexec_fn=spawner.make_preexec_fn(a),
            capture_output=True,
            text=True,
        )
        assert outcome in done.stderr, (code, done.stderr[-500:])
    done = subprocess.run([sys.executable, "-c", runaway], preexec_fn=spawner.make_preexec_fn(a))
    assert done.returncode == -9  # the kernel's OOM killer, inside the student's cgroup only
    fine = subprocess.run([sys.executable, "-c", runaway])  # the same outside it: the machine has the memory
    assert fine.returncode == 0
