"""A class on JupyterHub, played through in a real browser (Debian chromium through Playwright).

`make hub` starts JupyterHub for a class of two, as root (configurable-http-proxy, PAM with the passwords the
hub issued, each student's JupyterLab as their own Unix account in a memory cgroup, nbgrader's exchange).
Neither a classmate's name with one's own password nor a name with no account logs in. The instructor releases
lab 00 with `labutils hub release`. Each student logs in, fetches the lab in JupyterLab's Assignments tab,
works (ada: the reference answers; bo: a catalogue mistake) and submits. The instructor collects (`labutils
hub collect`), grades straight from the collected course (`labutils grade HUB/course`) and returns feedback
(`labutils hub feedback`). Each student fetches feedback in the Assignments tab and reads the score and, for
bo, the mistake and its fix. Then ada turns on bo from a notebook and from a terminal in her JupyterLab
(class_accounts.HOSTILE: bo's home, work and feedback, the masters, the gradebook, the hub's settings and
passwords, the exchange): every attempt is refused, and bo's work, submission and feedback are intact.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from browser_helpers import CHROMIUM_FLAGS, REPO, _free_port, find_chromium, run_all, wait_kernel_idle
from class_accounts import HOSTILE, class_machine, fresh_names, targets, to_json, wait_for_hub

from peft_grader import catalogue, hub_accounts, hub_spawner

LAB = "00_setup"
MISTAKE = "bnb_fp32"  # fails a hidden check whose message names the mistake (catalogue: its `message`)
CHROMIUM = find_chromium()
SCREENSHOTS = REPO / "out" / "screenshots" / "hub"
UI_MS = 60_000
SPAWN_MS = 180_000  # a student's first JupyterLab on a loaded 2-core machine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium found (`make setup` installs Debian's as root)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a class hub makes Unix accounts: root only"),
]


def labutils(*args: str) -> str:
    """The instructor's command, as typed; its output (it must succeed)."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "labutils"), *args], capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, f"labutils {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@contextlib.contextmanager
def running_hub(folder: Path, students: list[str]):
    """`make hub` in its own process group; its URL once JupyterHub answers. Everything it started (the
    proxy, the students' servers and kernels) is gone afterwards."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS")}
    flags = f"--students {','.join(students)} --port {port}"
    log = (folder.parent / "hub.log").open("w")
    proc = subprocess.Popen(
        ["make", "-C", str(REPO), "-o", ".venv/.installed", "hub", f"HUB_DIR={folder}", f"HUB_FLAGS={flags}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url, ok = f"http://127.0.0.1:{port}", False
    try:
        wait_for_hub(url, proc, folder.parent / "hub.log", 240)
        yield url
        ok = True
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: JupyterHub stops the students' servers, then exits
        deadline = time.monotonic() + 60
        while (leftovers := _processes_in(folder)) and time.monotonic() < deadline:
            time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not ok or not leftovers, f"the hub left processes running in {folder}: {leftovers}"


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    return ""


def _processes_in(folder: Path) -> list[int]:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.cwd().startswith(str(folder)):
                found.append(proc.pid)
    return found


def log_in(browser, url: str, student: str, password: str):
    page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    page.set_default_timeout(UI_MS)
    page.goto(f"{url}/hub/login")
    page.fill("#username_input", student)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_url(f"**/user/{student}/lab**", timeout=SPAWN_MS)
    page.locator(".jp-LabShell").wait_for(timeout=SPAWN_MS)
    return page


def open_assignments(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Nbgrader").click()
    page.locator(".lm-Menu-itemLabel", has_text="Assignment List").click()
    page.locator("#assignments").wait_for()


def refresh(page) -> None:
    page.locator("#refresh_assignments_list").click()
    page.locator("#released_assignments_list_loading").wait_for(state="hidden")


def test_two_students_fetch_submit_and_read_feedback_through_the_exchange(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    ada, bo = fresh_names("ada", "bo")
    hub, students = tmp_path / "hub", {ada: None, bo: MISTAKE}
    entries = {e.name: e for e in catalogue.entries(LAB)}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with class_machine(list(students), hub), running_hub(hub, list(students)) as url, sync_playwright() as pw:
        passwords = hub_accounts.issued_passwords(hub)
        assert "released" in labutils("hub", "release", LAB, "--dir", str(hub))
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        for name, password in ((bo, passwords[ada]), (fresh_names("cy")[0], passwords[ada])):
            page = browser.new_page()  # bo's name with ada's password; a name with no account
            page.goto(f"{url}/hub/login")
            page.fill("#username_input", name)
            page.fill("#password_input", password)
            page.click("#login_submit")
            expect(page.locator(".login_error")).to_be_visible(timeout=UI_MS)
            assert "/hub/login" in page.url
            page.close()
        assert (
            stat.S_IMODE((hub / "jupyterhub.sqlite").stat().st_mode) & 0o077 == 0
        )  # the hub's tokens: root's
        pages = {}
        for student, mistake in students.items():
            page = pages[student] = log_in(browser, url, student, passwords[student])
            # their JupyterLab runs as their own account, inside their own memory cgroup
            server = [
                p for p in _processes_in(hub / "homes" / student) if "jupyterhub-singleuser" in _cmdline(p)
            ]
            assert server, f"no JupyterLab of {student}'s"
            status = Path(f"/proc/{server[0]}/status").read_text()
            assert f"Uid:\t{pwd.getpwnam(student).pw_uid}\t" in status
            if hub_spawner.cgroup_version():
                assert f"{hub_spawner.PARENT}/{student}" in Path(f"/proc/{server[0]}/cgroup").read_text()
            # the students' JupyterLab has nbgrader's student side only
            page.locator(".lm-MenuBar-itemLabel", has_text="Nbgrader").click()
            assert "Formgrader" not in " ".join(page.locator(".lm-Menu-itemLabel").all_text_contents())
            page.keyboard.press("Escape")
            open_assignments(page)
            page.locator("#released_assignments_list button", has_text="Fetch").click()
            fetched = page.locator("#fetched_assignments_list .list_item", has_text=LAB).first
            fetched.wait_for()
            # the student's work, saved in the fetched notebook: the reference answers, or a mistake
            work = hub / "homes" / student / LAB
            cells = entries[mistake].cells if mistake else None
            nbformat.write(catalogue.submission(LAB, cells, release_dir=work), work / f"{LAB}.ipynb")
            fetched.locator("button", has_text="Submit").click()
            page.locator("#submitted_assignments_list .list_item", has_text=LAB).first.wait_for()
            page.screenshot(path=str(SCREENSHOTS / f"{student[:-6]}_submitted.png"))

        collected = labutils("hub", "collect", LAB, "--dir", str(hub))
        assert f"2 submissions ({ada}, {bo})" in collected and "refused" not in collected, collected
        graded = labutils("grade", str(hub / "course"), "--out", str(hub / "grading"))
        assert f"graded 00_setup for {bo}" in graded, graded
        released = labutils("hub", "feedback", LAB, "--dir", str(hub))
        assert f"{ada}, {bo}" in released, released

        with (hub / "grading" / "grades.csv").open() as fh:
            scores = {row["student_id"]: float(row["score"]) for row in csv.DictReader(fh)}
        assert scores == {ada: scores[ada], bo: entries[MISTAKE].score} and scores[ada] > scores[bo]

        for student, mistake in students.items():
            page = pages[student]
            refresh(page)
            submitted = page.locator("#submitted_assignments_list .list_item", has_text=LAB).first
            submitted.locator("button", has_text="Fetch Feedback").click()
            feedback_link = submitted.get_by_text("view feedback")
            expect(feedback_link).to_be_visible(timeout=UI_MS)
            page.screenshot(path=str(SCREENSHOTS / f"{student[:-6]}_feedback_fetched.png"))
            [html] = (hub / "homes" / student / LAB / "feedback").glob(f"*/{LAB}.html")
            feedback = page.context.new_page()
            feedback.goto(f"{url}/user/{student}/files/{LAB}/feedback/{html.parent.name}/{LAB}.html")
            text = feedback.locator("body").inner_text()
            feedback.screenshot(path=str(SCREENSHOTS / f"{student[:-6]}_feedback.png"), full_page=True)
            assert f"{scores[student]:g}" in text, (student, text[:500])
            if mistake:
                assert entries[mistake].message in text, f"{student}'s feedback does not name the mistake"
            else:
                assert entries[MISTAKE].message not in text
        bo_files = [
            hub / "homes" / bo / LAB / f"{LAB}.ipynb",
            hub / "course" / "submitted" / bo / LAB / f"{LAB}.ipynb",
            *(hub / "homes" / bo / LAB / "feedback").glob(f"*/{LAB}.html"),
        ]
        before = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in bo_files}
        tried = hostile_classmate(pages[ada], url, hub, ada, bo)
        allowed = {
            what: how
            for how_tried, outcomes in tried.items()
            for what, how in outcomes.items()
            if how != "refused"
        }
        assert not allowed, allowed
        assert {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in bo_files} == before  # intact
        browser.close()
    print(f"hub journey screenshots in {SCREENSHOTS}")


def hostile_classmate(page, url: str, hub: Path, student: str, victim: str) -> dict[str, dict]:
    """`student`, logged in as themself, runs the probe of class_accounts against `victim` from a notebook and
    from a terminal in their own JupyterLab; what each attempt gave, by where it was tried from."""
    account = pwd.getpwnam(student)
    home = Path(account.pw_dir)
    probe = f"import sys\nsys.argv = ['probe', {to_json(targets(hub, victim))!r}]\n{HOSTILE}"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(probe)])
    notebook.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, home / "probe.ipynb")
    (home / "probe.py").write_text(probe)
    for path in (home / "probe.ipynb", home / "probe.py"):
        os.chown(path, account.pw_uid, account.pw_gid)  # what the student wrote

    page.goto(f"{url}/user/{student}/lab/tree/probe.ipynb")
    page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(timeout=SPAWN_MS)
    wait_kernel_idle(page, SPAWN_MS)
    run_all(page, SPAWN_MS)
    shown = page.locator(".jp-NotebookPanel .jp-OutputArea-output", has_text="PROBE").first.inner_text()
    tried = {"notebook": json.loads(shown.split("PROBE ", 1)[1])}
    page.screenshot(path=str(SCREENSHOTS / "hostile_notebook.png"))
    # the running kernel's channels are unix sockets in the student's own runtime folder (TCP ports on localhost
    # would let any account subscribe to its output), and it has no debugpy (which listens for any account)
    kernels = [
        proc
        for proc in Path("/proc").glob("[0-9]*")
        if "ipykernel_launcher" in _cmdline(int(proc.name)) and proc.stat().st_uid == account.pw_uid
    ]
    assert kernels, f"no kernel of {student}'s running"
    for proc in kernels:
        connection = Path(_cmdline(int(proc.name)).split(" -f ", 1)[1].split()[0])
        assert connection.parent == hub_accounts.RUNTIME_ROOT / student
        assert json.loads(connection.read_text())["transport"] == "ipc"
        assert "pydevd" not in (proc / "maps").read_text()

    page.locator(".lm-MenuBar-itemLabel", has_text="File").click()
    page.locator(".lm-Menu-itemLabel", has_text="New").first.hover()
    page.locator(".lm-Menu-itemLabel", has_text="Terminal").first.click()
    page.locator(".jp-Terminal .xterm-helper-textarea").first.wait_for(timeout=UI_MS)
    page.locator(".jp-Terminal").first.click()
    page.keyboard.type(f"{sys.executable} probe.py > probe-terminal.out 2>&1\n")
    out = home / "probe-terminal.out"
    deadline = time.monotonic() + UI_MS / 1000
    while "PROBE" not in (out.read_text() if out.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.25)
    page.screenshot(path=str(SCREENSHOTS / "hostile_terminal.png"))
    tried["terminal"] = json.loads(out.read_text().split("PROBE ", 1)[1])
    assert (
        len(tried["terminal"]) == len(tried["notebook"]) == sum(len(v) for v in targets(hub, victim).values())
    )
    return tried
