"""Warm grading kernels: the course's libraries imported once per grading process, not once per notebook.

A zygote (`python -m peft_grader.warm serve`) imports torch, transformers, peft, bitsandbytes, datasets,
matplotlib, ipykernel and labutils, then waits. Each grading kernel is a fresh fork of it, which enters
namespaces of its own before any learner code runs, as bubblewrap does for a cold kernel
(`peft_grader.sandbox`):
- a PID namespace whose first process is the kernel: when it ends, every process it left behind ends too;
- a mount namespace: the whole file system read-only, the grader's folders and the other submissions
  hidden under empty read-only tmpfs, only the submission's own folder and the kernel's socket folder
  writable, a /dev of its own with the harmless devices only, and a /proc that shows this kernel only;
- a network and an IPC namespace of its own (loopback only), and a session of its own;
- /proc's writable-by-root parts (sys, sysrq-trigger, irq, bus) read-only, none of the zygote's file
  descriptors, no capabilities (bounding set, ambient and securebits included) and the same limits.

A fork shares nothing writable with the zygote or with the kernel before it: what a submission changes in
an imported module, a thread it starts or a file it writes stay in its own process and folder.
The libraries read some settings when they are imported (huggingface_hub's HF_HOME, datasets' cache), so
the zygote imports them with those folders at one fixed path, and each kernel mounts its own private
folder (`<submission>/.sandbox`) there.

The kernelspec's command is `python -m peft_grader.warm kernel --server ADDRESS <the sandbox's arguments>`
(`write_kernelspec(warm=...)`): a small client that passes its stdio to the zygote over a Unix socket in
the abstract namespace (which no kernel can reach: it has a network namespace of its own), and lives as
long as the kernel does; when jupyter_client kills it, the zygote kills the kernel. Where the zygote cannot
be reached the client starts a cold kernel instead.

Linux only, as root (where bubblewrap needs no user namespace); `available()` says whether this machine can.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import json
import os
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from peft_grader import sandbox

PRELOAD = (
    "numpy",
    "torch",
    "safetensors.torch",
    "transformers",
    "peft",
    "bitsandbytes",
    "accelerate",
    "datasets",
    "matplotlib",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",  # not matplotlib_inline: it hooks into IPython when first imported
    "IPython",
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "labutils",
    "labutils.models",
    "labutils.plots",
    "labutils.inspection",
    "peft_grader.kernel_guard",
)
# transformers loads its model classes lazily; these are the ones the labs build
PRELOAD_ATTRIBUTES = (
    ("transformers", "LlamaForCausalLM"),
    ("transformers", "BertForSequenceClassification"),
    ("transformers", "GPT2LMHeadModel"),
    ("transformers", "AutoModelForCausalLM"),
    ("transformers", "AutoTokenizer"),
    ("transformers", "BitsAndBytesConfig"),
    ("transformers", "Trainer"),
    ("transformers", "TrainingArguments"),
    ("peft", "LoraConfig"),
    ("peft", "get_peft_model"),
    ("peft", "PeftModel"),
)
DEVICES = ("null", "zero", "full", "random", "urandom")

# Linux constants (linux/sched.h, linux/mount.h, linux/prctl.h, linux/capability.h)
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x08000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (the generic syscall table)
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = -100, 0x8000, 0x1
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS = 1, 24, 28, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SECURE_NOROOT_ALL = 0x3F  # NOROOT, NO_SETUID_FIXUP and KEEP_CAPS, each with its lock
SIOCSIFFLAGS, IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x8914, 0x1, 0x8, 0x40

_libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns_fd")]


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    _check(_libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {target}")


def _readonly(path: str, readonly: bool = True, recursive: bool = False) -> None:
    attr = _MountAttr(MOUNT_ATTR_RDONLY if readonly else 0, 0 if readonly else MOUNT_ATTR_RDONLY, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    call = _libc.syscall(
        SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), flags, ctypes.byref(attr), ctypes.sizeof(attr)
    )
    _check(call, f"mount_setattr {path}")


def _bind(fd: int, target: str, writable: bool) -> None:
    if os.path.isdir(f"/proc/self/fd/{fd}"):
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        open(target, "a").close()  # noqa: SIM115 - a file to mount a device over
    _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    _readonly(target, readonly=not writable, recursive=not writable)


def available() -> str:
    """'' where warm kernels work here, else why not."""
    if sys.platform != "linux":
        return "warm kernels need Linux namespaces"
    if os.geteuid() != 0:
        return "warm kernels need root (bubblewrap isolates cold kernels without it)"
    return ""


# ---------------------------------------------------------------- the kernel, inside its namespaces
def _isolate(request: dict, private_at: str) -> None:
    """Mounts, devices, loopback, capabilities and limits of one kernel (in its new namespaces)."""
    import fcntl
    import resource
    import struct

    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Open every source first: a tmpfs laid over a hidden folder covers what the binds bring back.
    private = sandbox.private_folder(Path(request["cwd"]))  # made afresh, links never followed
    sources = {}
    for path in [*request["readable"], *request["writable"]]:
        sources[path] = os.open(path, os.O_PATH)
    devices = {name: os.open(f"/dev/{name}", os.O_PATH) for name in DEVICES if os.path.exists(f"/dev/{name}")}
    _readonly("/", recursive=True)
    for path in request["hidden"]:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    for path in request["readable"]:
        _bind(sources[path], path, writable=False)
    for path in request["writable"]:
        _bind(sources[path], path, writable=True)
    _bind(private, private_at, writable=True)
    for path in request["hidden"]:  # populated: now read-only too
        if os.path.isdir(path):
            _readonly(path)
    _mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755")
    for name, fd in devices.items():
        _bind(fd, f"/dev/{name}", writable=True)
    os.mkdir("/dev/shm")
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0")):
        os.symlink(target, f"/dev/{name}")
    os.symlink("/proc/self/fd/1", "/dev/stdout")
    os.symlink("/proc/self/fd/2", "/dev/stderr")
    _readonly("/dev")
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # As bubblewrap leaves it: what root may write in /proc without any capability (core_pattern, sysrq)
    for name in ("sys", "sysrq-trigger", "irq", "bus"):
        if os.path.exists(f"/proc/{name}"):
            _mount(f"/proc/{name}", f"/proc/{name}", None, MS_BIND | MS_REC)
            _readonly(f"/proc/{name}", recursive=True)
    for fd in [*sources.values(), *devices.values(), private]:
        os.close(fd)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # bubblewrap brings loopback up too
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING))
    # root without capabilities, and no way to regain them (exec included), as bubblewrap leaves it
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "ambient capabilities")
    _check(_libc.prctl(PR_SET_SECUREBITS, SECURE_NOROOT_ALL, 0, 0, 0), "securebits")
    cap = 0
    while _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    _check(_libc.capset(header, (ctypes.c_uint32 * 6)()), "capset")
    sandbox._limit(resource.RLIMIT_AS, request["memory_mb"] * 2**20)
    sandbox._limit(resource.RLIMIT_FSIZE, request["file_mb"] * 2**20)
    sandbox._limit(resource.RLIMIT_CORE, 0)


def _die_with_parent() -> None:
    parent = os.getppid()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it went before the request took effect
        os._exit(1)


def _exit_with(run) -> None:
    """In a fork: run(), then end this process with its exit status (never returns, never goes back to the
    zygote's loop). An exception is printed on stderr, which the caller reads or nbgrader logs."""
    code = 1
    try:
        result = run()
        code = result if isinstance(result, int) else 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        _libc.fflush(None)  # what C libraries printed (oneDNN's verbose lines, say): os._exit drops it
        os._exit(code if code >= 0 else 128 - code)


def _take_stdio(stdio: list[int]) -> None:
    """The client's stdin, stdout and stderr as this process's; killed if its parent goes."""
    _die_with_parent()
    for fd, target in zip(stdio, (0, 1, 2), strict=True):
        os.dup2(fd, target)
        os.close(fd)


def _init(request: dict, stdio: list[int], private_at: str) -> None:
    """The first process of the new PID namespace: isolate, start the kernel, reap, and exit with it.

    The kernel is not this process: the first process of a PID namespace ignores the signals it has no
    handler for, even its own (a segfault included), so a kernel there could not die as it should. When
    this one exits, every process left in the namespace is killed.
    """

    def run() -> int:
        _take_stdio(stdio)
        os.setsid()  # a session and process group of its own: kill(0, ...) reaches only this kernel
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # nothing of the zygote's or the handler's
        _isolate(request, private_at)
        kernel = os.fork()
        if kernel == 0:
            _exit_with(lambda: _kernel(request, private_at))
        while True:  # reap whatever is orphaned here, until the kernel itself ends
            pid, status = os.wait()
            if pid == kernel:
                return os.waitstatus_to_exitcode(status)

    _exit_with(run)


def _kernel(request: dict, private_at: str) -> None:
    """Become the ipykernel, with the submission's environment and folder."""
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.update({var: f"{private_at}/{sub}" for var, sub in sandbox.PRIVATE_DIRS.items()})
    os.environ.update(sandbox.KERNEL_ENV)
    os.chdir(request["cwd"])
    tempfile.tempdir = None
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[1:1] = [p for p in extra if p not in sys.path]
    _fresh_random_state()
    # matplotlib read MPLBACKEND when the zygote imported it; ipykernel's default (inline figures) is set now
    import matplotlib
    from ipykernel import kernelapp

    matplotlib.rcParams["backend"] = os.environ.get("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    sys.argv = [sys.executable, "-f", request["connection_file"]]
    kernelapp.launch_new_instance()
    # What a normal exit would do before the process ends: IPython's atexit clears the learner's namespace,
    # so files a cell left open are flushed and closed before the grader reads them.
    atexit._run_exitfuncs()
    import gc

    gc.collect()


def _module(request: dict, stdio: list[int], private_at: str) -> None:
    """Run a module of the grader as `python -m` would, in a process no learner code has touched."""
    import runpy

    def run() -> None:
        _take_stdio(stdio)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.path[0:0] = request["path"]
        sys.argv = [request["module"], *request["argv"]]
        _fresh_random_state()
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)

    _exit_with(run)


def _fresh_random_state() -> None:
    """Each kernel seeds as a new process would, not with the zygote's state."""
    import random

    import numpy
    import torch

    random.seed()
    numpy.random.seed()
    torch.seed()


def _serve_one(conn: socket.socket, listener: socket.socket, private_at: str) -> None:
    """In a fork of the zygote: start one kernel and wait for it, or kill it when its client goes."""
    code = 1
    try:
        listener.close()
        # The abstract socket's name is listed in /proc/net/unix: only the zygote's own user may ask.
        uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        if uid != os.geteuid():
            raise PermissionError(f"a request from uid {uid}")
        # the zygote ignores SIGCHLD; this process and the kernel wait for their children
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        request = json.loads(message)
        trusted = "module" in request  # the grader's own code (run_module), not a learner's kernel
        if not trusted:
            request["env"].pop("JPY_PARENT_PID", None)  # not in this PID namespace: the client watches
            _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET), "unshare")
        pid = os.fork()
        if pid == 0:
            conn.close()
            (_module if trusted else _init)(request, fds, private_at)
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        ready, _, _ = select.select([conn, pidfd], [], [])
        if conn in ready:  # the client went away (killed by jupyter_client): so does the kernel
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"exit": code}).encode())
        code = 0
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"error": traceback.format_exc(limit=1)}).encode())
    finally:
        os._exit(code)


def _self_test(private_at: str) -> str:
    """Isolate one throwaway fork as a kernel would be; "" when that works here, else why not."""
    folder = Path(private_at).parent / "self-test"
    folder.mkdir(exist_ok=True)
    request = {
        "cwd": str(folder),
        "readable": [],
        "writable": [],
        "hidden": [],
        "memory_mb": 1024,
        "file_mb": 1,
    }
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)

        def run() -> int:
            _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET), "unshare")
            inner = os.fork()
            if inner == 0:
                _exit_with(lambda: _isolate(request, private_at))
            return os.waitstatus_to_exitcode(os.waitpid(inner, 0)[1])

        os.dup2(write, 2)  # what went wrong, for the warning
        _exit_with(run)
    os.close(write)
    with os.fdopen(read, errors="replace") as errors:
        said = errors.read().strip().splitlines()
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    shutil.rmtree(folder, ignore_errors=True)
    return "" if code == 0 else (said[-1] if said else f"exit {code}")


def serve(address: str) -> None:
    """The zygote: import everything, listen, fork one handler per kernel; ends when its stdin closes."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    for module, attribute in PRELOAD_ATTRIBUTES:
        getattr(importlib.import_module(module), attribute)
    private_at = os.environ["PEFT_WARM_PRIVATE"]
    if why := _self_test(private_at):  # e.g. a container without the right to make namespaces
        print(f"unavailable: {why}", flush=True)
        return
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind("\0" + address)
    listener.listen(64)
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([listener, sys.stdin], [], [])
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 1):
            # The grading process ended: at once, so that the handlers (and their kernels) die with it now,
            # not after an interpreter's shutdown with torch loaded.
            os._exit(0)
        if listener in ready:
            conn, _ = listener.accept()
            if os.fork() == 0:
                _die_with_parent()
                _serve_one(conn, listener, private_at)
            conn.close()


# ---------------------------------------------------------------- the grading process's side
ZYGOTE_START_S = 300  # the imports, on a loaded machine
_zygotes: dict[int, tuple[subprocess.Popen, str]] = {}
_lock = threading.Lock()


def zygote(threads: int) -> str:
    """The address of this process's zygote for kernels with `threads` torch threads, started once; "" when
    it cannot start (said once on stderr), and the kernels then start cold."""
    with _lock:
        known = _zygotes.get(threads)
        if known and (not known[1] or known[0].poll() is None):  # running, or known not to start
            return known[1]
        address = f"peft-warm-{os.getpid()}-{threads}-{secrets.token_hex(8)}"
        folder = Path(tempfile.mkdtemp(prefix="peft-warm-"))
        (folder / "private").mkdir()
        env = os.environ | {
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "PEFT_WARM_PRIVATE": str(folder / "private"),
            **sandbox.KERNEL_ENV,
            # Grading kernels have no GPU (a cold kernel's /dev has none), and CUDA set up in the zygote
            # would be unusable in its forks.
            "CUDA_VISIBLE_DEVICES": "",
        }
        env |= {var: str(folder / "private" / sub) for var, sub in sandbox.PRIVATE_DIRS.items()}
        log = folder / "zygote.log"  # the libraries' import warnings, and any handler's traceback
        with open(log, "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "peft_grader.warm", "serve", "--address", address],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                cwd=folder,
            )
        atexit.register(_stop, proc, folder)
        said = _first_word(proc, deadline=ZYGOTE_START_S)
        if said != "ready":
            proc.kill()
            last = (log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
            why = said.removeprefix("unavailable: ") if said.startswith("unavailable") else last
            print(f"warning: warm kernels unavailable ({why[:200]}); starting kernels cold", file=sys.stderr)
            _zygotes[threads] = (proc, "")
            return ""
        _zygotes[threads] = (proc, address)
        return address


def _first_word(proc: subprocess.Popen, deadline: float) -> str:
    """The zygote's "ready" or "unavailable: why", skipping what a library printed first; "" past `deadline`
    seconds or when it ended."""
    import time

    end, pending = time.monotonic() + deadline, b""
    fd = proc.stdout.fileno()
    while (left := end - time.monotonic()) > 0 and select.select([fd], [], [], left)[0]:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        pending += chunk
        for line in pending.decode(errors="replace").splitlines():
            if line == "ready" or line.startswith("unavailable: "):
                return line
    return ""


def run_module(
    address: str, module: str, argv: list[str], env: dict, path: list[str], timeout: float
) -> subprocess.CompletedProcess:
    """`python -m module argv...` in a fork of the zygote at `address`: the grader's own code, trusted, with
    the libraries already imported; its output as subprocess.run(capture_output=True, text=True) gives it.
    Past `timeout` it is killed and subprocess.TimeoutExpired raised."""
    import selectors
    import time

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    request = {"module": module, "argv": argv, "env": env, "path": path, "cwd": os.getcwd()}
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    chunks = {out_r: [], err_r: []}
    try:
        conn.connect("\0" + address)
        with open(os.devnull, "rb") as devnull:
            socket.send_fds(conn, [json.dumps(request).encode()], [devnull.fileno(), out_w, err_w])
        os.close(out_w)
        os.close(err_w)
        out_w = err_w = -1
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            for fd in chunks:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired([module, *argv], timeout)
                for key, _ in selector.select(left):
                    data = os.read(key.fd, 1 << 16)
                    if data:
                        chunks[key.fd].append(data)
                    else:
                        selector.unregister(key.fd)
        conn.settimeout(max(deadline - time.monotonic(), 1))
        answer = json.loads(conn.recv(1 << 16) or b'{"error": "no answer"}')
    finally:
        conn.close()  # a process still running is killed by its handler
        for fd in (out_r, err_r, out_w, err_w):
            if fd >= 0:
                os.close(fd)
    if "error" in answer:  # the zygote's side failed, not the module: the caller may run it another way
        raise OSError(f"the zygote could not run {module}: {answer['error']}")
    stdout, stderr = (b"".join(chunks[fd]).decode(errors="replace") for fd in (out_r, err_r))
    return subprocess.CompletedProcess([module, *argv], answer.get("exit", 1), stdout, stderr)


def _stop(proc: subprocess.Popen, folder: Path) -> None:
    with contextlib.suppress(OSError):
        proc.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    proc.kill()
    shutil.rmtree(folder, ignore_errors=True)


def client(argv: list[str]) -> None:
    """The kernelspec's command: ask the zygote for a kernel, live as long as it does (else run cold)."""
    parser = argparse.ArgumentParser(prog="peft_grader.warm kernel")
    parser.add_argument("--server", required=True)
    options, rest = parser.parse_known_args(argv)
    args = sandbox.parse(rest)
    request = {
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "connection_file": args.command[args.command.index("-f") + 1],
        # the kernel's socket folder is among args.writable (never read from the connection file, which an
        # earlier kernel of the same notebook could have changed)
        "writable": [*args.writable, os.getcwd()],
        "hidden": args.hide,
        "readable": args.readable,
        "memory_mb": args.memory_mb,
        "file_mb": args.file_mb,
    }
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.connect("\0" + options.server)
        socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
    except OSError as err:
        print(f"peft_grader.warm: no zygote ({err}); starting a cold kernel", file=sys.stderr)
        sandbox.launch(rest)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: os._exit(1))  # the socket closes: the zygote kills the kernel
    reply = conn.recv(1 << 16)
    answer = json.loads(reply or b'{"exit": 1}')
    if "error" in answer:
        print(f"peft_grader.warm: the kernel could not start: {answer['error']}", file=sys.stderr)
    sys.exit(answer.get("exit", 1))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        parser = argparse.ArgumentParser(prog="peft_grader.warm serve")
        parser.add_argument("--address", required=True)
        serve(parser.parse_args(argv[1:]).address)
    elif argv[:1] == ["kernel"]:
        client(argv[1:])
    else:
        sys.exit("usage: python -m peft_grader.warm serve --address A | kernel --server A ...")


if __name__ == "__main__":
    main()
