"""Warm kernels (peft_grader.warm): forked from a zygote that imported the libraries once, each in
namespaces of its own, with nothing of one kernel left for the next.

These start real kernels through the kernelspec that SandboxExecute writes, as nbgrader does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peft_grader import sandbox, warm

pytestmark = pytest.mark.skipif(bool(warm.available()), reason=warm.available() or "warm kernels work here")

PROBE = r"""
import json, os, subprocess, sys, socket
import torch, transformers
report = {"pid": os.getpid(), "processes": sorted(p for p in os.listdir("/proc") if p.isdigit())}
writes = {}
for name, path in [("cwd", os.getcwd() + "/ok.txt"), ("tmp_root", "/tmp/warm-probe.txt"),
                   ("tmpdir", os.environ["TMPDIR"] + "/t.txt"), ("sibling", SIBLING + "/x.txt"),
                   ("repo", transformers.__file__ + ".probe")]:
    try:
        open(path, "w").write("x")
        writes[name] = True
    except OSError:
        writes[name] = False
report["writes"] = writes
report["proc_writable"] = [p for p in ("/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger")
                          if os.path.exists(p) and os.access(p, os.W_OK)]
report["session_leader"] = os.getsid(0) == os.getppid()
report["hidden"] = os.listdir(HIDDEN)
report["readable"] = os.listdir(READABLE)
report["cap_eff"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
try:
    socket.create_connection(("1.1.1.1", 53), timeout=1)
    report["network"] = True
except OSError:
    report["network"] = False
report["config_init_patched"] = getattr(transformers.BitsAndBytesConfig.__init__, "patched", False)
report["random"] = __import__("random").random()
report["threads"] = torch.get_num_threads()
def patched(self, *a, **k): pass
patched.patched = True
transformers.BitsAndBytesConfig.__init__ = patched          # changes this kernel's module only
subprocess.Popen(["sleep", "600"], start_new_session=True)  # dies with this kernel's PID namespace
print(json.dumps(report))
"""


@contextlib.contextmanager
def _kernel(spec: dict, cwd: Path):
    """A kernel started as SandboxExecute starts one (`spec`: write_kernelspec's hidden, readable and warm):
    its connection file in a folder of its own, read-only to it, and its sockets in that folder's s/."""
    from jupyter_client import KernelManager

    folder = sandbox.kernel_folder()
    spec_dir = sandbox.write_kernelspec(
        folder / "jupyter",
        writable=[folder / "s"],
        hidden=spec.get("hidden", []),
        readable=[*spec.get("readable", []), folder],
        warm=spec.get("warm", ""),
    )
    km = KernelManager(kernel_name="python3")
    km.kernel_spec_manager.kernel_dirs.insert(0, str(spec_dir.parent))
    km.transport, km.ip = "ipc", str(folder / "s" / "k")
    km.connection_file = str(folder / "kernel.json")
    km.start_kernel(cwd=str(cwd))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        shutil.rmtree(folder, ignore_errors=True)


def _execute(kc, code: str) -> dict:
    out = []

    def hook(msg):  # a cell's error would otherwise vanish from the test's report
        content = msg["content"]
        out.append(
            content.get("text", "")
            or (f"{content['ename']}: {content['evalue']}\n" if "ename" in content else "")
        )

    kc.execute_interactive(code, timeout=60, output_hook=hook)
    # IPython's history thread may print a complaint after the answer, or (no newline) just before or just after
    # it on the same line: read the first JSON value from the answer's opening brace, ignore what follows
    for line in reversed("".join(out).splitlines()):
        with contextlib.suppress(ValueError):
            if "{" not in line:
                return json.loads(line)
            return json.JSONDecoder().raw_decode(line[line.index("{") :])[0]
    raise AssertionError(f"the cell printed no JSON: {out}")


def _run_kernel(spec: dict, cwd: Path, code: str) -> dict:
    with _kernel(spec, cwd) as kc:
        return _execute(kc, code)


def _sleepers() -> list[str]:
    return [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p) == b"sleep\x00600\x00"]


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_warm_kernels_are_isolated_and_leave_nothing_for_the_next(tmp_path):
    hidden, readable, sibling = tmp_path / "hidden", tmp_path / "hidden" / "cache", tmp_path / "sibling"
    for folder in (hidden, readable, sibling):
        folder.mkdir(parents=True, exist_ok=True)
    (hidden / "secret.txt").write_text("another student's work")
    (readable / "model.txt").write_text("the model cache")
    started = time.perf_counter()
    address = warm.zygote(1)
    assert warm.zygote(1) == address, "one zygote per process and thread count"
    spec = {"hidden": [hidden, sibling, sandbox.kernels_folder()], "readable": [readable], "warm": address}
    code = PROBE.replace("SIBLING", repr(str(sibling))).replace("HIDDEN", repr(str(hidden)))
    code = code.replace("READABLE", repr(str(readable)))
    reports = []
    for i in range(2):
        cwd = tmp_path / f"submission{i}"
        cwd.mkdir()
        reports.append(_run_kernel(spec, cwd, code))
        assert (cwd / "ok.txt").exists() and not (tmp_path / "warm-probe.txt").exists()
    first, second = reports
    for report in reports:
        assert report["pid"] == 2 and report["processes"][:2] == ["1", "2"], "a PID namespace of its own"
        assert report["writes"] == {
            "cwd": True,
            "tmp_root": False,
            "tmpdir": True,
            "sibling": False,
            "repo": False,
        }
        assert report["hidden"] == ["cache"] and report["readable"] == ["model.txt"]
        assert report["proc_writable"] == [], "root without capabilities may still write these in /proc"
        assert report["session_leader"], "the kernel's init leads a session of its own"
        assert int(report["cap_eff"], 16) == 0 and report["network"] is False
        assert report["threads"] == 1
    assert second["config_init_patched"] is False, (
        "the first kernel's change to transformers reached the next"
    )
    assert first["random"] != second["random"], "every kernel seeds as a new process"
    assert not (sibling / "x.txt").exists() and not list(Path("/tmp").glob("warm-probe.txt"))
    deadline = time.time() + 10
    while _sleepers() and time.time() < deadline:
        time.sleep(0.2)
    assert _sleepers() == [], "a process a kernel started outlived it"
    print(f"zygote and two kernels: {time.perf_counter() - started:.1f} s")


SNOOP = r"""
import glob, json, os, socket
found = {"kernels": os.listdir(KERNELS), "keys": [], "connected": []}
for path in glob.glob("/tmp/**/*.json", recursive=True) + glob.glob(RUNTIME + "/*.json"):
    try:
        info = json.load(open(path))
    except (OSError, ValueError):
        continue
    if isinstance(info, dict) and info.get("key") in VICTIMS:
        found["keys"].append(path)
for path in glob.glob("/tmp/**/k-*", recursive=True):
    if path.startswith(VICTIM_SOCKETS):
        try:
            socket.socket(socket.AF_UNIX).connect(path)
            found["connected"].append(path)
        except OSError:
            pass
print(json.dumps(found))
"""


@pytest.mark.parametrize("kind", ["warm", "cold"])
def test_a_kernel_sees_no_other_kernels_key_or_sockets(tmp_path, kind, monkeypatch):
    """Graded at the same time, a submission must not find a classmate's kernel, nor the instructor's own
    JupyterLab kernels: with a key and a socket it could run code in them, outside its sandbox (a unix
    socket accepts connections even on a read-only file system)."""
    from peft_grader.sandbox_execute import _kernel_files

    if kind == "cold" and not shutil.which("bwrap"):
        pytest.skip("cold kernels are confined by bubblewrap, which is not installed")
    runtime = tmp_path / "runtime"  # Jupyter's runtime folder, where JupyterLab keeps its kernels' files
    runtime.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    instructor_key = f"instructor-{os.getpid()}-{time.time_ns()}"  # this run's: earlier runs leave theirs
    (runtime / "kernel-instructor.json").write_text(json.dumps({"key": instructor_key, "ip": "127.0.0.1"}))
    address = warm.zygote(1) if kind == "warm" else ""
    spec = {"hidden": _kernel_files(), "warm": address}
    for name in ("victim", "snoop"):
        (tmp_path / name).mkdir()
    with _kernel(spec, tmp_path / "victim") as victim:
        assert _execute(victim, "import json\nprint(json.dumps(1))") == 1
        info = json.loads(Path(victim.connection_file).read_text())
        with _kernel(spec, tmp_path / "snoop") as snoop:
            own = Path(snoop.connection_file).parent
            code = SNOOP.replace("KERNELS", repr(str(sandbox.kernels_folder()))).replace(
                "RUNTIME", repr(str(runtime))
            )
            code = code.replace("VICTIMS", repr([info["key"], instructor_key]))
            found = _execute(
                snoop, code.replace("VICTIM_SOCKETS", repr(str(Path(victim.connection_file).parent)))
            )
    assert found == {"kernels": [own.name], "keys": [], "connected": []}


TRAP = r"""
import json, os
from ipykernel import get_connection_file
try:
    open(get_connection_file(), "a").write(" ")
    changed = True
except OSError:
    changed = False
os.rename(".sandbox", "old-sandbox")  # IPython's history is open in it
os.symlink(OUTSIDE, ".sandbox")  # where a careless restart would put the next kernel's private folder
print(json.dumps({"connection_file_changed": changed}))
"""


@pytest.mark.parametrize("kind", ["warm", "cold"])
def test_a_kernel_cannot_lay_a_trap_for_its_restart(tmp_path, kind):
    """A kernel of the same notebook starts again after a crash: what the first left in its folder must not
    steer the second (its connection file, or a link where the private folder goes)."""
    if kind == "cold" and not shutil.which("bwrap"):
        pytest.skip("cold kernels are confined by bubblewrap, which is not installed")
    outside, cwd = tmp_path / "outside", tmp_path / "notebook"
    outside.mkdir()
    cwd.mkdir()
    spec = {"hidden": [sandbox.kernels_folder()], "warm": warm.zygote(1) if kind == "warm" else ""}
    assert _run_kernel(spec, cwd, TRAP.replace("OUTSIDE", repr(str(outside)))) == {
        "connection_file_changed": False
    }
    assert (cwd / ".sandbox").is_symlink()
    code = "import json, os\nopen(os.environ['TMPDIR'] + '/x', 'w').write('x')\nprint(json.dumps(1))"
    assert _run_kernel(spec, cwd, code) == 1
    assert list(outside.iterdir()) == [], "the restarted kernel's private folder went through the link"
    assert (cwd / ".sandbox").is_dir() and not (cwd / ".sandbox").is_symlink()


@pytest.mark.parametrize("kind", ["warm", "cold"])
def test_figures_show_inline_as_in_any_kernel(tmp_path, kind):
    """The zygote imported matplotlib before ipykernel chose its inline backend: the fork must choose it."""
    if kind == "cold" and not shutil.which("bwrap"):
        pytest.skip("cold kernels are confined by bubblewrap, which is not installed")
    spec = {"hidden": [sandbox.kernels_folder()], "warm": warm.zygote(1) if kind == "warm" else ""}
    with _kernel(spec, tmp_path) as kc:
        shown = []
        kc.execute_interactive(
            "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()",
            timeout=60,
            output_hook=lambda m: shown.extend(m["content"].get("data", {})),
        )
    assert "image/png" in shown


def test_without_a_zygote_the_kernel_starts_cold(tmp_path, capfd):
    """A kernelspec whose zygote is gone (the grading process ended) still gives a sandboxed kernel."""
    spec = {"hidden": [], "warm": "peft-warm-gone"}
    cwd = tmp_path / "submission"
    cwd.mkdir()
    report = _run_kernel(
        spec, cwd, "import json, os\nprint(json.dumps({'sandbox': os.environ.get('NBGRADER_SANDBOX')}))"
    )
    assert report == {"sandbox": "1"}
    assert "starting a cold kernel" in capfd.readouterr().err


def test_available_says_why_not(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "root" in warm.available()


def test_run_module_runs_the_graders_code_in_a_fork(tmp_path):
    """The outside checks' route (peft_grader.verify): output, exit status and a time limit, as subprocess.run."""
    (tmp_path / "saying.py").write_text(
        "import sys, torch\nprint('hello', sys.argv[1:], torch.get_num_threads() > 0)\n"
        "print('to stderr', file=sys.stderr)\nsys.exit(3)\n"
    )
    pid_file = tmp_path / "sleepy.pid"
    (tmp_path / "sleepy.py").write_text(
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)\n"
    )
    address = warm.zygote(1)
    env = dict(os.environ)
    done = warm.run_module(address, "saying", ["a", "b"], env, [str(tmp_path)], timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (3, "hello ['a', 'b'] True\n", "to stderr\n")
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        warm.run_module(address, "sleepy", [], env, [str(tmp_path)], timeout=2)
    assert time.monotonic() - started < 10
    sleeper = Path(f"/proc/{pid_file.read_text()}")  # a fork of the zygote: its command line is the zygote's
    deadline = time.time() + 10
    while sleeper.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert not sleeper.exists(), "the module that ran past its time limit is still running"


def test_settings_read_on_first_use_are_the_kernels_not_the_zygotes(tmp_path):
    """oneDNN reads ONEDNN_MAX_CPU_ISA (test_numerics' CPU without native bf16) when it is first used, which
    in a warm kernel is after the fork: a fork with a setting behaves as a new process with it."""
    (tmp_path / "bf16_linear.py").write_text(
        "import torch\na = torch.randn(64, 64, dtype=torch.bfloat16)\ntorch.nn.functional.linear(a, a)\n"
    )
    address = warm.zygote(1)

    def onednn(output: str) -> tuple:
        lines = [line for line in output.splitlines() if line.startswith("onednn_verbose")]
        return sorted({line for line in lines if ",info,cpu,isa:" in line}), any(",exec," in x for x in lines)

    for extra in ({"ONEDNN_VERBOSE": "1"}, {"ONEDNN_VERBOSE": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"}):
        env = os.environ | extra | {"PYTHONPATH": str(tmp_path)}
        alone = subprocess.run(
            [sys.executable, "-m", "bf16_linear"], env=env, capture_output=True, text=True, check=True
        )
        forked = warm.run_module(address, "bf16_linear", [], env, [str(tmp_path)], timeout=60)
        assert forked.returncode == 0, forked.stderr
        assert onednn(forked.stdout) == onednn(alone.stdout), extra


def test_a_zygote_that_cannot_start_means_cold_kernels_said_once(tmp_path, monkeypatch, capsys):
    (tmp_path / "numpy.py").write_text("raise ImportError('numpy is broken here')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert warm.zygote(7) == ""
    assert "numpy is broken here" in capsys.readouterr().err
    assert warm.zygote(7) == ""
    assert capsys.readouterr().err == ""


def test_asking_for_warm_kernels_where_they_cannot_run_is_a_readable_error(tmp_path, monkeypatch):
    from labutils.errors import CourseError
    from peft_grader import grading

    with pytest.raises(CourseError, match="give auto, warm or cold"):
        grading.grade(tmp_path, tmp_path / "out", kernels="hot")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(CourseError, match="need root.*--cold-kernels"):
        grading.grade(tmp_path, tmp_path / "out", kernels="warm")
