"""A class on JupyterHub (`labutils hub`, `make hub`): students fetch and submit labs in JupyterLab's
Assignments tab through nbgrader's exchange; the instructor releases, collects, grades with `labutils grade`
and returns the feedback through the same exchange.

A class (the default; root starts it): each student a Unix account of their own with an issued password,
their JupyterLab run as that account in a memory cgroup, and the instructor's files closed to them
(`peft_grader.hub_accounts`, `peft_grader.hub_spawner`). `--demo`: one Unix account and one shared password
for everyone, for a look on a laptop, said so at its start.

Everything lives in one folder, HUB_DIR (default hub/ in the clone):
  hub.json           the hub's settings (address, ports, class list; the demo's shared password): root only
  passwords.csv      a class's issued passwords, for the instructor to hand out: root only
  exchange/          nbgrader's exchange: peft-course/outbound, inbound, feedback
  course/            the instructor's nbgrader course: release/, and submitted/ once collected: root only
  grading/           what `labutils grade HUB_DIR/course` writes: gradebook, feedback, grades.csv: root only
  collecting/        a class's submissions, taken out of the students' reach by collect: root only
  refused/           submissions collect set aside (made by another account than the one they name): root only
  student-config/    the students' nbgrader and JupyterLab settings (their JUPYTER_CONFIG_PATH)
  homes/<student>/   each student's home and JupyterLab folder (a class: 0700, the student's own)
  models/            the tiny models, built once for the whole class, read-only for students
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from labutils.errors import CourseError
from peft_grader import hub_accounts
from peft_grader.course import COURSE_ID
from peft_grader.nbcourse import GRADER, labs, make_course, nbgrader

HUB_FILES = GRADER / "hub"  # jupyterhub_config.py, and the proxy's npm package
# The students' JupyterLab: nbgrader's student side only (Assignments tab, Validate); the formgrader, the
# course list and the assignment editor are the instructor's.
INSTRUCTOR_ONLY = {
    "server": ["nbgrader.server_extensions.formgrader", "nbgrader.server_extensions.course_list"],
    "lab": [
        "@jupyter/nbgrader:formgrader",
        "@jupyter/nbgrader:course-list",
        "@jupyter/nbgrader:create-assignment",
    ],
}


def proxy_command() -> str:
    """configurable-http-proxy: the one `make setup` installed in grader/hub (npm ci), else one on PATH."""
    local = HUB_FILES / "node_modules" / ".bin" / "configurable-http-proxy"
    if local.exists():
        return str(local)
    if found := shutil.which("configurable-http-proxy"):
        return found
    raise CourseError(
        "JupyterHub's proxy, configurable-http-proxy, is not installed. Fix: `make setup` (it runs "
        "`npm ci` in grader/hub; needs Node.js 20+ and npm), or `npm install -g configurable-http-proxy`."
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exchange_settings(root: Path) -> dict[str, str]:
    return {"Exchange.root": str((root / "exchange").resolve()), "CourseDirectory.course_id": COURSE_ID}


def prepare(
    root: Path,
    students: list[str],
    password: str | None = None,
    port: int = 8000,
    ip: str = "127.0.0.1",
    demo: bool = False,
    lti: Path | None = None,
) -> dict:
    """HUB_DIR laid out and hub.json written; the settings. A class (not `demo`) needs root: it makes each
    new student's account and closes the instructor's files. The demo's shared password is generated if
    none is given or kept from an earlier start. `lti`: a class's students launch it from the LMS with LTI
    1.3 (peft_grader.hub_lti: the JSON file of the LMS's settings) instead of logging in with passwords."""
    from labutils.profiles import current_profile

    root = Path(root).resolve()
    if not students:
        raise CourseError("no students: give the class list, e.g. --students ada,bo")
    for name in students:
        hub_accounts.check_name(name)
    if not demo:
        hub_accounts.require_root()
        if password:
            raise CourseError(
                "a class has no shared password: each student gets their own (HUB_DIR/passwords.csv; a new "
                "one with `labutils hub password NAME`). --password is for the --demo hub only."
            )
    if lti and demo:
        raise CourseError(
            "--lti is for a class (as root), not the --demo hub: LTI logs in each student's own account."
        )
    if lti:
        if importlib.util.find_spec("ltiauthenticator") is None:
            raise CourseError(
                "--lti needs jupyterhub-ltiauthenticator. Fix: `make setup` (or pip install -e '.[grader]')."
            )
        from peft_grader.hub_lti import read_settings

        lti_settings = read_settings(lti)
    saved = root / "hub.json"
    earlier = json.loads(saved.read_text()) if saved.exists() else {}
    if demo:
        password = password or earlier.get("password") or secrets.token_urlsafe(9)
        if len(password) < 8:
            raise CourseError("the shared password must have 8 characters or more (JupyterHub's rule).")
    for sub in ("exchange", "homes", "models", "student-config/labconfig"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    settings = {
        "ip": ip,
        "port": int(port),
        "hub_port": _free_port(),
        "proxy_api_port": _free_port(),
        "proxy": proxy_command(),
        "students": sorted(set(students)),
        "profile": current_profile(),
        "class": not demo,
        "memory_limit": hub_accounts.MEMORY_LIMIT,
    }
    if demo:
        settings["password"] = password
    if lti:
        settings["lti"] = lti_settings
    saved.touch(mode=0o600)
    saved.chmod(0o600)
    saved.write_text(json.dumps(settings, indent=1))
    make_course(root / "course", settings=exchange_settings(root))
    # The students' nbgrader: the class exchange and course. In the demo one Unix account runs every
    # student's server, and nbgrader would file every submission under it: their hub name is their id. In a
    # class nbgrader takes the account's own name, which a student cannot change.
    config = root / "student-config"
    (config / "nbgrader_config.py").write_text(
        "import os\n\nc = get_config()  # noqa: F821\n"
        f"c.Exchange.root = {exchange_settings(root)['Exchange.root']!r}\n"
        f"c.CourseDirectory.course_id = {COURSE_ID!r}\n"
        + ('c.CourseDirectory.student_id = os.environ["JUPYTERHUB_USER"]\n' if demo else "")
    )
    server = {"ServerApp": {"jpserver_extensions": dict.fromkeys(INSTRUCTOR_ONLY["server"], False)}}
    if not demo:
        # kernels talk over unix sockets in the student's own runtime folder: a kernel's TCP ports on localhost
        # would let any account of the machine read its output (IOPub needs no key)
        server["KernelManager"] = {"transport": "ipc"}
        # and no debugpy: JupyterLab's debugger makes the kernel listen with it on a localhost TCP port that
        # takes commands from any account of the machine, without a key (code run as the student)
        stub = config / "python" / "debugpy" / "__init__.py"  # first on the students' PYTHONPATH
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text(
            'raise ImportError("no debugger on a class hub: it would listen where classmates reach it")\n'
        )
    (config / "jupyter_server_config.json").write_text(json.dumps(server))
    (config / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": dict.fromkeys(INSTRUCTOR_ONLY["lab"], True)})
    )
    # JupyterLab's news toast off (the class machine may be offline: it asks, then fetches). A default the
    # hub's own folder gives, so nothing is ever written into a student's home as root.
    (config / "labconfig" / "default_setting_overrides.json").write_text(
        json.dumps({"@jupyterlab/apputils-extension:notification": {"fetchNews": "false"}})
    )
    if not demo:
        for name in settings["students"]:
            if not hub_accounts.is_student(name):
                hub_accounts.add_student(root, name)
            hub_accounts.runtime_dir(name)
    return settings


def hub_command(root: Path) -> tuple[list[str], dict[str, str]]:
    """The jupyterhub command line and environment for a prepared HUB_DIR."""
    if importlib.util.find_spec("jupyterhub") is None:
        raise CourseError("JupyterHub is not installed. Fix: `make setup` (or pip install -e '.[grader]').")
    env = dict(os.environ)
    env["PEFT_HUB_DIR"] = str(Path(root).resolve())
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [sys.executable, "-m", "jupyterhub", "-f", str(HUB_FILES / "jupyterhub_config.py")]
    return cmd, env


def build_class_models(root: Path) -> None:
    """The tiny models into HUB_DIR/models, where every student's kernel reads them."""
    from labutils.models import CACHE_VAR, build_all
    from labutils.profiles import current_profile

    if current_profile() != "tiny":
        return
    before = os.environ.get(CACHE_VAR)
    os.environ[CACHE_VAR] = str(Path(root).resolve() / "models")
    try:
        build_all(quiet=True)
    finally:
        if before is None:
            os.environ.pop(CACHE_VAR, None)
        else:
            os.environ[CACHE_VAR] = before


def start(
    root: Path,
    students: list[str],
    password: str | None,
    port: int,
    ip: str,
    demo: bool = False,
    lti: Path | None = None,
) -> int:
    settings = prepare(root, students, password, port, ip, demo=demo, lti=lti)
    build_class_models(root)
    cmd, env = hub_command(root)
    url = f"http://{ip}:{port}"
    if demo:
        print(
            f"JupyterHub DEMO for {len(settings['students'])} students at {url}: one Unix account and one "
            "password for everyone, so every student can read and change every other's work, the masters "
            "and the gradebook. Not for a class: start it as root without --demo.\n"
            f"  log in as one of: {', '.join(settings['students'])}\n"
            f"  shared password:  {settings['password']}  (kept in {Path(root) / 'hub.json'})",
            flush=True,
        )
    else:
        hub_accounts.lock_down(root, GRADER.parent)
        from peft_grader.hub_spawner import cgroup_version

        limit = (
            f"{settings['memory_limit']} of memory per student server (a cgroup v{cgroup_version()})"
            if cgroup_version()
            else "NO memory limit: this machine lets no one make a memory cgroup (grader/README.md)"
        )
        login = (
            f"  students log in from the LMS (LTI 1.3, issuer {settings['lti']['issuer']}): a launch whose "
            f"{settings['lti']['username_key']} is a student's account name\n"
            if settings.get("lti")
            else f"  passwords to hand out: {Path(root) / hub_accounts.PASSWORDS} (root only)\n"
        )
        print(
            f"JupyterHub for a class of {len(settings['students'])} at {url}: each student their own Unix "
            f"account, {limit}.\n{login}"
            f"  more students: labutils hub add NAME --dir {root}; a new password: labutils hub password NAME",
            flush=True,
        )
    print(
        f"  then, as the instructor: labutils hub release 00_setup --dir {root}\nStop it with Ctrl-C.",
        flush=True,
    )
    # A class's hub writes its database (tokens, the students' server state) and logs for root's eyes only.
    umask = None if demo else (lambda: os.umask(0o077))
    proc = subprocess.Popen(cmd, cwd=root, env=env, preexec_fn=umask)
    # JupyterHub stops the students' servers and the proxy before it exits: wait for that. A Ctrl-C reaches
    # it too (one process group); a SIGTERM sent to this process alone is passed on.
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue


def _is_class(root: Path) -> bool:
    saved = Path(root) / "hub.json"
    return saved.exists() and json.loads(saved.read_text()).get("class", False)


def add(root: Path, names: list[str]) -> dict[str, str]:
    """New students of a running or stopped class; their passwords."""
    _course(root)
    if not _is_class(root):
        raise CourseError(f"{root} is a --demo hub: its students are the list given at its start.")
    if not names:
        raise CourseError("give the names of the students to add, e.g. labutils hub add cy")
    issued = {name: hub_accounts.add_student(root, name) for name in names}
    hub_accounts.lock_down(root, GRADER.parent)
    return issued


def password(root: Path, names: list[str]) -> dict[str, str]:
    """A new password for each named student (the old one stops working)."""
    _course(root)
    hub_accounts.require_root()
    if not names:
        raise CourseError("give the names of the students, e.g. labutils hub password ada")
    return {name: hub_accounts.set_password(root, name) for name in names}


def remove(root: Path, names: list[str]) -> list[str]:
    _course(root)
    if not names:
        raise CourseError("give the names of the students to remove, e.g. labutils hub remove cy")
    for name in names:
        hub_accounts.remove_student(root, name)
    return names


def _course(root: Path) -> Path:
    course = Path(root).resolve() / "course"
    if not os.access(Path(root) / "hub.json", os.R_OK) and (Path(root) / "hub.json").exists():
        raise CourseError(f"{root} is a class hub's folder, which only root reads: run this with sudo.")
    if not (course / "nbgrader_config.py").exists():
        raise CourseError(
            f"{root} is not a class hub's folder. Fix: start one with `labutils hub start --dir {root}`."
        )
    return course


def _labs(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in labs()]
    if unknown or not names:
        raise CourseError(f"labs {unknown or names}: give one or more of {', '.join(labs())}.")
    return names


def release(root: Path, names: list[str]) -> list[str]:
    """Release labs to the exchange: nbgrader generates the student copy (links pointing at the course's
    repository, as in notebooks/), and release_assignment puts it where students fetch it."""
    from peft_grader.course import point_links, repository

    course = _course(root)
    for lab in _labs(names):
        nbgrader(course, "generate_assignment", lab, "--force")
        notebook = course / "release" / lab / f"{lab}.ipynb"
        notebook.write_text(point_links(notebook.read_text(), repository()))
        nbgrader(course, "release_assignment", lab, "--force")
        if _is_class(root):
            hub_accounts.seal_exchange(root)
    return names


def collect(root: Path, names: list[str]) -> dict[str, list[str]]:
    """The latest submission of every student into HUB_DIR/course/submitted; who submitted each lab."""
    course = _course(root)
    _labs(names)
    given = []
    if _is_class(root):
        staged, refused = hub_accounts.stage_submissions(root)
        given = [f"--Exchange.root={staged}"]
        for entry in refused:
            print(
                f"refused {entry}: not made by the student it names, or holding a link or a name nbgrader misreads "
                f"(kept in {Path(root) / 'refused'}, never graded)"
            )
    found = {}
    for lab in _labs(names):
        nbgrader(course, "collect", lab, "--update", *given)
        found[lab] = sorted(p.parent.name for p in (course / "submitted").glob(f"*/{lab}"))
    return found


def return_feedback(root: Path, names: list[str], grading: Path | None = None) -> dict[str, list[str]]:
    """The feedback `labutils grade` wrote in `grading` (default HUB_DIR/grading) back to the exchange,
    where each student fetches their own; who has feedback for each lab."""
    root = Path(root).resolve()
    _course(root)
    grading = Path(grading or root / "grading").resolve()
    if not (grading / "gradebook.db").exists():
        raise CourseError(
            f"{grading} holds no graded class. Fix: labutils grade {root / 'course'} --out {grading}"
        )
    found = {}
    for lab in _labs(names):
        given = [f"--{name}={value}" for name, value in exchange_settings(root).items()]
        nbgrader(grading, "release_feedback", lab, *given)
        found[lab] = sorted(p.parent.name for p in (grading / "feedback").glob(f"*/{lab}"))
    return found
