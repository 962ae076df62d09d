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
submit under a classmate's name; nbgrader itself only logs a warning). Collect takes each submission out
of the students' reach before it checks it, so nothing can be swapped in between.
"""

from __future__ import annotations

import contextlib
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
# Each student's Jupyter runtime folder (kernel connection files and, in a class, the kernels' unix sockets,
# whose paths may not pass 107 characters: a home in HUB_DIR can be too deep), made by root, theirs alone.
RUNTIME_ROOT = Path("/run/peft-hub")
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
    if not NAME.fullmatch(name or ""):
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


def runtime_dir(name: str) -> Path:
    """The student's runtime folder, made (again: /run may be emptied at a reboot) as theirs, mode 0700."""
    RUNTIME_ROOT.mkdir(mode=0o711, parents=True, exist_ok=True)
    folder = RUNTIME_ROOT / name
    folder.mkdir(mode=0o700, exist_ok=True)
    account = pwd.getpwnam(name)
    os.chown(folder, account.pw_uid, account.pw_gid)
    folder.chmod(0o700)
    return folder


def set_password(root: Path, name: str, password: str | None = None) -> str:
    """A new password for a student of this class (generated unless given); recorded for the instructor."""
    if not is_student(name):
        raise CourseError(f"{name!r} is not a student of this class. Add them: labutils hub add {name}")
    password = password or secrets.token_urlsafe(9)
    if len(password) < 8:
        raise CourseError("a password must have 8 characters or more.")
    _run("chpasswd", stdin=f"{name}:{password}\n")
    issued = issued_passwords(root)
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
    runtime_dir(name)
    return set_password(root, name)


def remove_student(root: Path, name: str) -> None:
    """The student can no longer log in and their running server stops; their home, their submissions and
    their grades stay where they are (an account added again under the name gets the home back)."""
    require_root()
    if not is_student(check_name(name)):
        raise CourseError(f"{name!r} is not a student of this class: nothing to remove.")
    subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)  # their server and kernels
    _run("userdel", name)  # without -r: the home stays, owned by the old uid, which nobody else holds
    shutil.rmtree(RUNTIME_ROOT / name, ignore_errors=True)
    home = Path(root).resolve() / "homes" / name
    if home.exists():
        os.chown(home, 0, 0)
        home.chmod(0o700)
    issued = issued_passwords(root)
    issued.pop(name, None)
    _write_issued(root, issued)


def erase(name: str) -> None:
    """An account and all the hub made for it gone, its processes first: for benches and tests, which make
    throwaway classes (a class removes a student with `remove_student`, which keeps their work)."""
    from peft_grader.hub_spawner import cgroup_dir

    subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
    subprocess.run(["userdel", name], capture_output=True)
    for version in (1, 2):
        with contextlib.suppress(OSError):
            cgroup_dir(name, version).rmdir()
    shutil.rmtree(RUNTIME_ROOT / name, ignore_errors=True)


def issued_passwords(root: Path) -> dict[str, str]:
    """The passwords issued so far, by student (HUB_DIR/passwords.csv)."""
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
    # read-only for students: one poisoned model or setting would be everyone's
    for shared in ("models", "student-config"):
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
    course = exchange / "peft-course"  # root's before any student could make it (and block every release)
    course.mkdir(mode=0o755, exist_ok=True)
    if course.is_symlink() or course.lstat().st_uid != 0:
        raise CourseError(f"{course} was not made by the instructor: remove it, then start the hub again.")
    inbound = exchange / "peft-course" / "inbound"
    if inbound.is_dir():
        inbound.chmod(0o3733)


STAGED = "collecting"  # HUB_DIR/collecting/peft-course/inbound: submissions taken out of the students' reach


def _seize(top: Path) -> tuple[set[int], bool]:
    """Every folder of a submission made root's and 0755, from the top down, each opened without following a
    link, so its maker can no longer add, remove or swap an entry in it, by a path or by a descriptor kept
    open; then the owners of everything in it, and whether it holds anything but files and folders."""
    owners, link = set(), False
    folders = [top]
    while folders:
        folder = folders.pop()
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            return owners, True  # a link where a folder was
        try:
            owners.add(os.fstat(fd).st_uid)
            os.fchown(fd, 0, 0)
            os.fchmod(fd, 0o755)
            for entry in os.scandir(fd):
                if entry.is_dir(follow_symlinks=False):
                    folders.append(folder / entry.name)
                elif entry.is_file(follow_symlinks=False):
                    owners.add(entry.stat(follow_symlinks=False).st_uid)
                else:  # a link, a pipe, a device, a socket: never part of a submission (nbgrader's copy stops on some)
                    link = True
        finally:
            os.close(fd)
    return owners, link


def _account(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _student_named(entry: str) -> str | None:
    """The student a submission's name gives, read as nbgrader's collect reads it (student+lab+time+random),
    or None where nbgrader would misread or fail on it."""
    from nbgrader.utils import parse_utc

    parts = entry.rsplit("+", 3)
    if len(parts) != 4 or not NAME.match(parts[0]):
        return None
    try:
        parse_utc(parts[2])
    except Exception:  # whatever dateutil raises for a time it cannot read: nbgrader's collect would stop
        return None
    return parts[0]


def stage_submissions(root: Path) -> tuple[Path, list[str]]:
    """Take every submission out of inbound/ into HUB_DIR/collecting (root only; one rename each, so no one
    can swap anything in it between this check and nbgrader's copy), seize it (`_seize`), and move to
    HUB_DIR/refused every one that its named student did not make (another account owns a part of it) or
    that holds a link (nbgrader's collect follows links, as root). Returns the exchange root to collect from
    (its inbound/ holds every submission staged so far) and the names refused."""
    root = Path(root).resolve()
    inbound = root / "exchange" / "peft-course" / "inbound"
    staged_root = root / STAGED
    staged = staged_root / "peft-course" / "inbound"
    staged.mkdir(parents=True, exist_ok=True)
    staged_root.chmod(0o700)
    refused = root / "refused"
    moved = []
    for entry in sorted(inbound.iterdir()) if inbound.is_dir() else []:
        target = staged / entry.name
        if target.exists():  # the same name staged before: nbgrader names are unique, so not the submitter's
            target = staged.parent / "duplicates" / f"{entry.name}+{secrets.token_hex(4)}"
            target.parent.mkdir(mode=0o700, exist_ok=True)
        os.rename(entry, target)
        try:
            owners, odd = _seize(target) if not target.is_symlink() else (set(), True)
        except OSError:
            owners, odd = set(), True
        student = _student_named(entry.name) if target.parent == staged else None
        owner = pwd.getpwnam(student).pw_uid if student and is_student(student) else None
        sidecars = all((target / name).is_file() for name in ("timestamp.txt", "submission_secret.txt"))
        if odd or owner is None or owners != {owner} or not sidecars:
            refused.mkdir(mode=0o700, exist_ok=True)
            os.rename(target, refused / f"{entry.name}+{secrets.token_hex(4)}")  # never onto an earlier one
            makers = sorted(_account(uid) for uid in owners) or ["?"]
            moved.append(f"{entry.name} (made by {', '.join(makers)})")
    return staged_root, moved
