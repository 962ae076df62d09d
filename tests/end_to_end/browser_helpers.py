"""Driving JupyterLab in a real browser (Debian chromium through Playwright) for tests/end_to_end/test_browser.py.

A server is started the way a person starts it, through `make lab` or `make grade-ui`, in its own process
group (killed as a whole at the end), on a free port with a known token and isolated JupyterLab settings
and workspaces. Waits follow the UI's state (prompts, dialogs, rows), never fixed sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# What a headless test server needs beyond `make lab`'s defaults (root in CI containers, no browser).
SERVER_FLAGS = "--no-browser --allow-root --ServerApp.ip=127.0.0.1"
SERVER_START_S = 240  # a loaded 2-core machine can take a minute to start JupyterLab


def find_chromium() -> str | None:
    """Debian's chromium (what `make setup` installs), or another chromium on PATH."""
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A JupyterLab server started by `make TARGET VAR=...`, reachable at .url(path)."""

    def __init__(self, target: str, variables: dict[str, str], home: Path):
        self.port = _free_port()
        self.token = f"browser-test-{os.getpid()}"
        home.mkdir(parents=True, exist_ok=True)
        settings = home / "lab-settings"
        # no "official Jupyter news" toast over the notebook (it asks for consent and would fetch online)
        notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        notification.parent.mkdir(parents=True, exist_ok=True)
        notification.write_text(json.dumps({"fetchNews": "false"}))
        env = dict(os.environ)
        env.update(
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(home / "lab-workspaces"),
            JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        )
        env.pop("MAKEFLAGS", None)
        env.pop("MFLAGS", None)
        args = [
            "make",
            "-C",
            str(REPO),
            # the environment is set up already (the tests run in it): never reinstall from a test
            "-o",
            ".venv/.installed",
            target,
            *(f"{k}={v}" for k, v in variables.items()),
            f"LAB_PORT={self.port}",
            f"LAB_TOKEN={self.token}",
            f"LAB_FLAGS={SERVER_FLAGS}",
        ]
        self.log = home / f"{target}.log"
        self._log = self.log.open("w")
        self.proc = subprocess.Popen(
            args, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            self._wait_up()
        except BaseException:
            self.stop()
            raise

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}{sep}token={self.token}"

    def _wait_up(self) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url("api/status"), timeout=5) as reply:
                    if reply.status == 200:
                        return
            time.sleep(0.25)
        raise TimeoutError(f"JupyterLab did not answer within {SERVER_START_S} s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Kill the whole process group: make, JupyterLab and every kernel it started."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        # kernels that left the group (none should) still die with their session's group id
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------- notebook UI
def open_notebook(page, server: Server, path: str, timeout_ms: int) -> None:
    """Open a notebook in a fresh workspace (?reset) and wait until its kernel is idle."""
    page.goto(server.url(f"lab/tree/{path}?reset"))
    page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(timeout=timeout_ms)
    wait_kernel_idle(page, timeout_ms)


def wait_kernel_idle(page, timeout_ms: int) -> None:
    page.wait_for_function(
        """() => {
            const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
            const name = panel && panel.querySelector('.jp-Toolbar-kernelName');
            const status = panel && panel.querySelector('.jp-Notebook-ExecutionIndicator');
            return name && status && !/No Kernel/.test(name.textContent)
                && status.getAttribute('data-status') === 'idle';
        }""",
        timeout=timeout_ms,
    )


def set_cell_source(page, index: int, text: str) -> None:
    """Replace a cell's source in its JupyterLab editor, as a person pasting an answer would."""
    editor = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(index).locator(".cm-content")
    editor.scroll_into_view_if_needed()
    editor.click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)  # one input event: no auto-indent or auto-closed brackets
    page.keyboard.press("Escape")  # back to command mode


def run_all(page, timeout_ms: int) -> None:
    """Run > Run All Cells, then wait until no cell is queued or running."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')];
            return prompts.length > 0 && prompts.every(p => !p.textContent.includes('*'))
                && prompts.some(p => /\\[\\d+\\]/.test(p.textContent));
        }""",
        timeout=timeout_ms,
    )


def code_cell_prompts(page) -> list[str]:
    return page.locator(".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt").all_text_contents()


def tracebacks(page) -> list[str]:
    """The text of every error output (a traceback) in the open notebook; warnings are not errors."""
    texts = page.locator(
        '.jp-NotebookPanel .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
    ).all_inner_texts()
    return [t for t in texts if "Traceback (most recent call last)" in t]


def validate(page, timeout_ms: int):
    """Press the nbgrader toolbar's Validate button; return the results dialog (a Locator)."""
    page.locator(".jp-NotebookPanel .validate-button").first.click()
    dialog = page.locator(".jp-Dialog", has_text="Validation Results")
    dialog.wait_for(timeout=timeout_ms)
    return dialog


def close_dialog(page) -> None:
    page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").first.click()
    page.locator(".jp-Dialog").first.wait_for(state="detached")
