"""A class hub where nobody reads what is not theirs (`labutils hub start` as root).

Each student is a Unix account of their own, in the group `peft-students`, with a home of mode 0700 in
HUB_DIR/homes and a password the instructor issues (`chpasswd`; the hub logs them in through PAM). Their
JupyterLab runs as that account, in a memory cgroup of its own (`peft_grader.hub_spawner`). What only the
instructor (root, who runs the hub) may read is closed to everyone else: the course folder with the
released masters, the gradebook, the hub's settings and the issued passwords, and every part of the clone a
student's kernel does not need (the masters and hidden checks in grader/, the tests).

nbgrader's exchange keeps its own permission model (students can write into `inbound/` but not list it;
feedback files are named by a secret only the submitter holds), with two holes closed: the exchange's root
gets the sticky bit (nbgrader issue 1225: anyone could rename the course's folder and plant their own) and
so does `inbound/` (no one renames or deletes another's submission); and `collect` sets aside every
submission whose owner is not the student it names, or that holds a link (nbgrader issue 1097: anyone can
submit under a classmate's name; nbgrader itself only logs a warning).
"""

from __future__ import annotations

import csv
import grp
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from labutils.errors import CourseError

STUDENTS_GROUP = "peft-students"
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")  # a Unix name and an nbgrader folder name alike
PASSWORDS = "passwords.csv"  # HUB_DIR/passwords.csv: the issued passwords, for the instructor to hand out
# What a student's JupyterLab needs from the clone (it runs the clone's .venv, which imports labutils from
# src/ and reads data/); everything else in it is the instructor's.
CLONE_FOR_STUDENTS = {".venv", "src", "data", "notebooks", "README.md", "pyproject.toml", "LICENSE"}
MEMORY_LIMIT = (
    "4G"  # per student server, its kernels included (a lab's peak is about 1.1 GB: bench/README.md)
)


def require_root() -> None:
    if os.geteuid() != 0:
        raise CourseError(
            "a class hub runs each student's JupyterLab as the student's own Unix account, which only root "
            "can start (JupyterHub's LocalProcessSpawner switches user). Run it as root (sudo make hub), or "
            "start the single-account demo on purpose with `--demo` (every student is then this account "
            "and can read everything it can)."
        )


def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise CourseError(
            f"student name {name!r}: give lower-case letters, digits, - or _, starting with a letter, at most "
            "31 characters, e.g. ada (it becomes their Unix account and nbgrader's folder name)."
        )
    return name


def is_student(name: str) -> bool:
    """Whether `name` is an account this class made (in the students' group)."""
    try:
        pwd.getpwnam(name)
        return name in grp.getgrnam(STUDENTS_GROUP).gr_mem
    except KeyError:
        return False


def _run(*cmd: str, stdin: str | None = None) -> None:
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if done.returncode:
        raise CourseError(f"`{' '.join(cmd[:2])} ...` failed: {(done.stderr or done.stdout).strip()}")


def set_password(root: Path, name: str, password: str | None = None) -> str:
    """A new password for a student of this class (generated unless given); recorded for the instructor."""
    if not is_student(name):
        raise CourseError(f"{name!r} is not a student of this class. Add them: labutils hub add {name}")
    password = password or secrets.token_urlsafe(9)
    if len(password) < 8:
        raise CourseError("a password must have 8 characters or more.")
    _run("chpasswd", stdin=f"{name}:{password}\n")
    issued = _issued(root)
    issued[name] = password
    _write_issued(root, issued)
    return password


def add_student(root: Path, name: str) -> str:
    """A Unix account for a new student, home HUB_DIR/homes/<name> (0700), and their password."""
    require_root()
    check_name(name)
    if is_student(name):
        raise CourseError(
            f"{name!r} is already a student of this class (their work is kept). A new password: "
            f"labutils hub password {name}"
        )
    try:
        pwd.getpwnam(name)
        raise CourseError(
            f"{name!r} is a Unix account of this machine that this class did not make: choose another name "
            "(a student's account must be theirs alone)."
        )
    except KeyError:
        pass
    try:
        grp.getgrnam(STUDENTS_GROUP)
    except KeyError:
        _run("groupadd", STUDENTS_GROUP)
    home = Path(root).resolve() / "homes" / name
    existed = home.exists()  # a student removed and added again keeps the home they had
    _run("useradd", "-d", str(home), "-m", "-K", "HOME_MODE=0700", "-s", "/bin/bash", "-U",
         "-G", STUDENTS_GROUP, name)  # fmt: skip
    if existed:
        account = pwd.getpwnam(name)
        for path in [home, *home.rglob("*")]:
            os.lchown(path, account.pw_uid, account.pw_gid)
    home.chmod(0o700)
    return set_password(root, name)


def remove_student(root: Path, name: str) -> None:
    """The student can no longer log in and their running server stops; their home, their submissions and
    their grades stay where they are (an account added again under the name gets the home back)."""
    require_root()
    if not is_student(check_name(name)):
        raise CourseError(f"{name!r} is not a student of this class: nothing to remove.")
    subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)  # their server and kernels
    _run("userdel", name)  # without -r: the home stays, owned by the old uid, which nobody else holds
    home = Path(root).resolve() / "homes" / name
    if home.exists():
        os.chown(home, 0, 0)
        home.chmod(0o700)
    issued = _issued(root)
    issued.pop(name, None)
    _write_issued(root, issued)


def _issued(root: Path) -> dict[str, str]:
    path = Path(root) / PASSWORDS
    if not path.exists():
        return {}
    with path.open() as f:
        return {row["student"]: row["password"] for row in csv.DictReader(f)}


def _write_issued(root: Path, issued: dict[str, str]) -> None:
    path = Path(root) / PASSWORDS
    path.touch(mode=0o600)
    path.chmod(0o600)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "password"])
        writer.writerows(sorted(issued.items()))


def issued_passwords(root: Path) -> dict[str, str]:
    return _issued(root)


def _reachable(path: Path) -> Path | None:
    """The first folder on the way to `path` that other accounts cannot pass through, if any."""
    for folder in [*reversed(path.resolve().parents), path.resolve()]:
        if folder.is_dir() and not folder.stat().st_mode & stat.S_IXOTH:
            return folder
    return None


def lock_down(root: Path, clone: Path) -> None:
    """Permissions for a class: the instructor's parts closed, the students' parts read-only, the exchange
    as nbgrader's model wants it with the sticky bit (see the module's docstring)."""
    root, clone = Path(root).resolve(), Path(clone).resolve()
    interpreter = Path(os.path.realpath(sys.executable)).parent  # a venv's python links to its base's
    for needed in (root, Path(sys.prefix), clone / "src", interpreter, Path(sys.base_prefix)):
        if blocked := _reachable(needed):
            raise CourseError(
                f"students could not reach {needed} (their JupyterLab runs the course's Python): {blocked} is "
                f"closed to other accounts (mode {stat.S_IMODE(blocked.stat().st_mode):o}). Put the clone, its "
                "Python and HUB_DIR where every account can pass through (e.g. /srv/peft-course), or let them "
                f"pass without listing it: chmod o+x {blocked}"
            )
    for entry in clone.iterdir():  # masters, hidden checks, catalogue, tests, graded runs: the instructor's
        if entry.name not in CLONE_FOR_STUDENTS and entry.resolve() != root and not entry.is_symlink():
            entry.chmod(stat.S_IMODE(entry.stat().st_mode) & 0o700)
    clone.chmod(stat.S_IMODE(clone.stat().st_mode) & ~0o004)  # pass through, not list
    root.chmod(0o711)
    for private in ("course", "grading", "refused"):
        (root / private).mkdir(exist_ok=True)
        (root / private).chmod(0o700)
    for shared in (
        "models",
        "student-config",
    ):  # read-only for students: one poisoned model would be everyone's
        for path in [root / shared, *(root / shared).rglob("*")]:
            if not path.is_symlink():
                os.chown(path, 0, 0)
                path.chmod(0o755 if path.is_dir() else 0o644)
    (root / "homes").chmod(0o711)
    for name in ("hub.json", PASSWORDS, "jupyterhub.sqlite", "jupyterhub_cookie_secret"):
        if (root / name).exists():
            (root / name).chmod(0o600)
    seal_exchange(root)


def seal_exchange(root: Path) -> None:
    """nbgrader's modes, plus the sticky bit on the exchange's root and on inbound/ (nbgrader keeps it: it
    compares only the permission bits)."""
    exchange = Path(root).resolve() / "exchange"
    exchange.mkdir(exist_ok=True)
    exchange.chmod(0o1777)
    inbound = exchange / "peft-course" / "inbound"
    if inbound.is_dir():
        inbound.chmod(0o3733)


def refuse_forged(root: Path) -> list[str]:
    """Move every submission in inbound/ that its named student did not make (another account owns it) or
    that holds a link, to HUB_DIR/refused (kept for the instructor, never collected). Returns what moved."""
    inbound = Path(root).resolve() / "exchange" / "peft-course" / "inbound"
    refused = Path(root).resolve() / "refused"
    moved = []
    for entry in sorted(inbound.iterdir()) if inbound.is_dir() else []:
        student = entry.name.split("+")[0]
        try:
            owner = pwd.getpwnam(student).pw_uid if is_student(student) else None
        except KeyError:
            owner = None
        paths = [entry, *entry.rglob("*")] if entry.is_dir() and not entry.is_symlink() else [entry]
        honest = owner is not None and all(p.lstat().st_uid == owner and not p.is_symlink() for p in paths)
        if not honest:
            refused.mkdir(mode=0o700, exist_ok=True)
            shutil.move(str(entry), refused / entry.name)
            moved.append(entry.name)
    return moved
