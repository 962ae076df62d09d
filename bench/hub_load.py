"""A class of N students on this machine's hub (issue 33): scripted logins and spawns, as root.

    sudo python bench/hub_load.py [--students 20] [--port 8765]

Makes N student accounts (`labutils hub`'s own code: Unix accounts, issued passwords, the permissions), starts
JupyterHub for them, logs every student in over HTTP with their password at once (threads), and waits until
each one's JupyterLab answers. Prints per student the seconds from login to a running server and the memory
their server's cgroup holds once all are up (JupyterLab idle, no kernel), then the class's total. Removes
the accounts and the folder at the end. The course's Python must be reachable by other accounts (the hub's
start says which folder to open where it is not).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import html.parser
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "grader"))

from peft_grader import hub, hub_accounts, hub_spawner  # noqa: E402


class _Xsrf(html.parser.HTMLParser):
    token = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("name") == "_xsrf":
            self.token = attrs.get("value", "")


def log_in_and_spawn(url: str, name: str, password: str, timeout: float = 300) -> float:
    """Seconds from the login form's POST to the student's JupyterLab answering."""
    session = requests.Session()
    form = _Xsrf()
    form.feed(session.get(f"{url}/hub/login", timeout=60).text)
    started = time.perf_counter()
    reply = session.post(
        f"{url}/hub/login?next=",
        data={"username": name, "password": password, "_xsrf": form.token},
        timeout=timeout,
    )
    reply.raise_for_status()
    while time.perf_counter() - started < timeout:
        with contextlib.suppress(requests.RequestException):
            # through the hub's OAuth to the student's own JupyterLab (a pending spawn stays on the hub's page)
            page = session.get(f"{url}/user/{name}/lab", timeout=30)
            if page.status_code == 200 and page.url.startswith(f"{url}/user/{name}/lab"):
                return time.perf_counter() - started
        time.sleep(0.5)
    raise TimeoutError(f"{name}'s JupyterLab did not answer within {timeout:.0f} s")


def cgroup_memory(name: str) -> int | None:
    version = hub_spawner.cgroup_version()
    if version is None:
        return None
    group = hub_spawner.cgroup_dir(name, version)
    usage = group / ("memory.current" if version == 2 else "memory.usage_in_bytes")
    return int(usage.read_text()) if usage.exists() else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    hub_accounts.require_root()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a timeout's TERM still removes the accounts
    root = Path(tempfile.mkdtemp(prefix="peft-hub-load-"))
    root.chmod(0o711)
    names = [f"load{i:02d}{os.getpid() % 1000:03d}" for i in range(args.students)]
    proc = None
    modes = {
        entry: entry.stat().st_mode & 0o7777 for entry in [REPO, *REPO.iterdir()] if not entry.is_symlink()
    }
    try:
        settings = hub.prepare(root, names, port=args.port)
        hub.build_class_models(root)
        hub_accounts.lock_down(root, REPO)
        passwords = hub_accounts.issued_passwords(root)
        cmd, env = hub.hub_command(root)
        log = (root / "hub.log").open("w")
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lambda: os.umask(0o077),
        )  # fmt: skip
        url = f"http://{settings['ip']}:{settings['port']}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/hub/api", timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
            seconds = dict(
                zip(names, pool.map(lambda n: log_in_and_spawn(url, n, passwords[n]), names), strict=True)
            )
        everyone = time.perf_counter() - started
        time.sleep(5)  # the servers settle
        memory = {name: cgroup_memory(name) for name in names}
        print("| student | login to a running JupyterLab (s) | server memory, idle (MiB) |\n|---|---:|---:|")
        for name in names:
            mib = f"{memory[name] / 2**20:.0f}" if memory[name] is not None else "no cgroup"
            print(f"| {name} | {seconds[name]:.1f} | {mib} |")
        known = [m for m in memory.values() if m is not None]
        print(
            f"\n{len(names)} students logged in at once: all running after {everyone:.1f} s; per student "
            f"median {statistics.median(seconds.values()):.1f} s, slowest {max(seconds.values()):.1f} s"
        )
        if known:
            print(
                f"memory per idle server: median {statistics.median(known) / 2**20:.0f} MiB; the class "
                f"{sum(known) / 2**30:.2f} GiB; limit per student {settings['memory_limit']}"
            )
        return 0
    except Exception:
        if (root / "hub.log").exists():  # what the hub said, before the folder goes
            print("".join((root / "hub.log").read_text().splitlines(keepends=True)[-40:]), file=sys.stderr)
        raise
    finally:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for name in names:
            hub_accounts.erase(name)
        shutil.rmtree(root, ignore_errors=True)
        for entry, mode in modes.items():  # the clone as it was (lock_down closed the instructor's parts)
            entry.chmod(mode)


if __name__ == "__main__":
    sys.exit(main())
