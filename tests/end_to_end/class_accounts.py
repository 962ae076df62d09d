"""Students of a class hub as tests meet them: fresh Unix account names per run, removed afterwards, and the
course's Python reachable by other accounts while the test runs (tests/end_to_end/test_hub_isolation.py,
test_hub_class.py). Root only."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import stat
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

from peft_grader import hub_accounts, hub_spawner

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def fresh_names(*stems: str) -> list[str]:
    """Account names no earlier run left behind (a name that exists would not be the class's)."""
    tag = secrets.token_hex(3)
    return [f"{stem}{tag}" for stem in stems]


@contextlib.contextmanager
def class_machine(students: list[str], hub_dir: Path):
    """While it runs: other accounts may pass through the folders that hold the course's Python (here:
    pyenv's, in /root) and HUB_DIR (here: pytest's, in /tmp), as `labutils hub start`'s message tells an
    instructor to allow. Afterwards: every mode of the clone and of those folders as it was, and the students'
    accounts, processes and cgroups gone."""
    hub_dir.mkdir(parents=True, exist_ok=True)
    reach = [Path(os.path.realpath(sys.executable)), Path(sys.base_prefix) / "x", hub_dir / "x"]
    closed = {p for f in reach for p in f.parents if p.is_dir() and not p.stat().st_mode & stat.S_IXOTH}
    modes = {entry: stat.S_IMODE(entry.lstat().st_mode) for entry in [REPO, *REPO.iterdir(), *closed]}
    for folder in closed:
        folder.chmod(stat.S_IMODE(folder.stat().st_mode) | stat.S_IXOTH)
    try:
        yield
    finally:
        for name in students:
            hub_accounts.erase(name)
        for entry, mode in modes.items():
            if entry.exists() and not entry.is_symlink():
                entry.chmod(mode)


def as_student(name: str, args: list[str], root: Path, **kw) -> subprocess.CompletedProcess:
    """`args` run as the student's account (the hub's own switch, without a memory limit), in their home,
    with their JupyterLab's environment."""
    account = pwd.getpwnam(name)
    env = {
        "HOME": account.pw_dir,
        "USER": name,
        "PATH": f"{BIN}:/usr/bin:/bin",
        "JUPYTER_CONFIG_PATH": str(root / "student-config"),
        "PEFT_COURSE_CACHE": str(root / "models"),
    }
    drop = hub_spawner.ClassSpawner().make_preexec_fn(name)
    return subprocess.run(
        args, env=env, cwd=account.pw_dir, preexec_fn=drop, capture_output=True, text=True, **kw
    )


# A hostile classmate's probe: each attempt on `targets` (its JSON, argv[1]) refused or ALLOWED, printed as
# one line `PROBE {...}`. The same program runs from a student's shell, notebook, terminal and graded cell.
HOSTILE = textwrap.dedent(
    """
    import glob, json, os, sys
    targets = json.loads(sys.argv[1])
    def attempt(action):
        try:
            result = action()
        except (PermissionError, FileNotFoundError):  # not found: hidden, or a name it could not learn
            return "refused"
        return "ALLOWED: " + repr(result)[:80] if result not in ([], None, False) else "refused"
    def write(p):
        with open(p, "w") as f:
            f.write("a was here")
        return True
    out = {}
    for p in targets["read"]:
        out[f"read {len(out)} " + p] = attempt(lambda: open(p, "rb").read(20) if os.path.isfile(p) else os.listdir(p))
    for p in targets["write"]:
        out["write " + p] = attempt(lambda: write(p))
    for p in targets["list"]:
        out["list " + p] = attempt(lambda: os.listdir(p))
    for pattern in targets["glob"]:
        out["glob " + pattern] = attempt(lambda: glob.glob(pattern))
    for src, dst in targets["rename"]:
        out["rename " + src] = attempt(lambda: os.rename(src, dst) or True)
    print("PROBE " + json.dumps(out))
    """
)


def targets(root: Path, b: str, lab: str = "00_setup") -> dict:
    """What a hostile classmate reaches for: to read, write, list, find and rename (`b` is the victim)."""
    exchange = root / "exchange" / "peft-course"
    b_home = root / "homes" / b
    return {
        "read": [
            b_home,
            b_home / lab / f"{lab}.ipynb",
            b_home / ".local/share/jupyter/nbgrader_cache",  # b's submission secrets: their feedback
            root / "hub.json",
            root / "passwords.csv",
            root / "course",  # the instructor's course: the class's submissions once collected
            root / "course" / "gradebook.db",
            REPO / "grader" / "source" / lab / f"{lab}.ipynb",
            REPO / "grader" / "checks" / "lab00_setup" / "kernel.py",
            REPO / "grader" / "mistakes",
            REPO / "tests" / "conftest.py",
        ],
        "write": [
            b_home / "planted.txt",
            b_home / lab / f"{lab}.ipynb",
            exchange / "outbound" / lab / "planted.txt",  # a fake release
            root / "models" / "planted.txt",  # every kernel of the class reads the models
            root / "student-config" / "nbgrader_config.py",
        ],
        "list": [exchange / "inbound", exchange / "feedback", root / "homes", REPO],
        "glob": [exchange / "inbound" / f"{b}+*"],
        "rename": [[exchange, root / "exchange" / "mine"]],  # nbgrader issue 1225
    }


def to_json(value) -> str:
    return json.dumps(value, default=str)


def wait_for_hub(url: str, proc: subprocess.Popen, log: Path, seconds: float) -> None:
    """Until JupyterHub answers at `url`; its log's tail when it exits or `seconds` pass first."""
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        if time.monotonic() > deadline:
            raise TimeoutError(log.read_text()[-3000:])
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/hub/api", timeout=5) as reply:
                if reply.status == 200:
                    return
        time.sleep(0.5)
