"""Running untrusted learner notebooks: limits, no network, writes confined, kernels that can be stopped.

Threat model (see grader/README.md): a submission is arbitrary Python run by the grader. Each runs in
its own nbgrader scratch course and process tree; its kernel is started through `launch()`, which
applies resource limits and, where the platform allows, a bubblewrap sandbox (read-only file system
except the submission's own folder, sensitive folders hidden, no network). Without bubblewrap the
kernel still gets limits and, as root, `unshare -n`; `capabilities()` says what is missing.

The standard library only: `launch()` runs once per graded kernel, so its start-up time is paid per
submission. The nbgrader side (what happens when a kernel dies or a notebook runs out of time) is
`peft_grader.sandbox_execute`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from labutils.errors import CourseError

DEFAULT_MEMORY_MB = 8192  # address space per kernel: torch + a 4-bit model need about 3 GB
DEFAULT_FILE_MB = 512  # largest file a kernel may write
INTERRUPT_GRACE_S = 10  # how long an interrupted kernel has to answer before it is restarted
GUARD_STARTUP = """\
# Written by peft_grader.sandbox for a grading kernel: guard the grading environment (peft_grader.kernel_guard).
import peft_grader.kernel_guard as _kernel_guard

_kernel_guard.install()
del _kernel_guard
"""


# Every grading kernel's environment: no hub, the sandbox said, and a left-over breakpoint() that does nothing
# (the kernel has no stdin: pdb would stop the cell).
KERNEL_ENV = {"HF_HUB_OFFLINE": "1", "NBGRADER_SANDBOX": "1", "PYTHONBREAKPOINT": "0"}
# Caches and temporary files go inside the submission's own folder, the only writable place.
PRIVATE_DIRS = {
    "TMPDIR": "tmp",
    "HF_DATASETS_CACHE": "hf-datasets",
    "MPLCONFIGDIR": "mpl",
    "HF_HOME": "hf",
    "TRITON_CACHE_DIR": "triton",
    "IPYTHONDIR": "ipython",
}


def private_folder(cwd: Path) -> int:
    """A fresh `<cwd>/.sandbox` (the kernel's caches and temporary files, and the kernel guard's start-up
    file), made without following links: an earlier kernel of the same notebook, restarted, may have
    left a link there to anywhere, and this runs with the grader's rights. Returns a descriptor of it.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    root = os.open(cwd, flags)
    try:
        try:
            found = os.lstat(".sandbox", dir_fd=root)
        except FileNotFoundError:
            found = None
        if found and stat.S_ISDIR(found.st_mode):
            shutil.rmtree(".sandbox", dir_fd=root)  # rmtree never follows the links inside
        elif found:
            os.unlink(".sandbox", dir_fd=root)  # a link or a file where the folder goes
        os.mkdir(".sandbox", dir_fd=root)
        private = os.open(".sandbox", flags, dir_fd=root)
    finally:
        os.close(root)
    for sub in PRIVATE_DIRS.values():
        os.mkdir(sub, dir_fd=private)
    startup = _folders_at(private, ("ipython", "profile_default", "startup"))
    try:
        guard = os.open(
            "00-grading-guard.py", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=startup
        )
        with os.fdopen(guard, "w") as file:
            file.write(GUARD_STARTUP)
    finally:
        os.close(startup)
    return private


def _folders_at(fd: int, parts: tuple[str, ...]) -> int:
    """Each of `parts` inside the one before, under the folder open as `fd`, made where missing and opened
    without following a link; returns a descriptor of the last."""
    current = os.dup(fd)
    for part in parts:
        try:
            os.mkdir(part, dir_fd=current)
        except FileExistsError:
            pass
        try:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=current)
        finally:
            os.close(current)
        current = inner
    return current


def kernels_folder() -> Path:
    """The parent of every sandboxed kernel's own folder (its connection file and its sockets).

    Every sandboxed kernel has it hidden and gets back only its own folder, so no kernel can read the key of
    another one graded at the same time, nor reach its sockets (a unix socket can be connected to even on a
    read-only file system)."""
    base = Path(tempfile.gettempdir()) / "peft-kernels"
    base.mkdir(mode=0o700, exist_ok=True)
    made = base.lstat()  # another account may have made it first in a shared /tmp: then it is not ours to use
    if not stat.S_ISDIR(made.st_mode) or made.st_uid != os.geteuid() or made.st_mode & 0o077:
        raise CourseError(
            f"{base} is not this account's own private folder (another account may have made it, to watch or "
            "break the grading kernels): remove it, or grade with TMPDIR set to a folder of your own."
        )
    return base


def kernel_folder() -> Path:
    """A new folder for one kernel's connection file (read-only to the kernel) and, in its `s/`, its sockets
    (a short path: unix sockets allow ~100 characters), inside kernels_folder()."""
    folder = Path(tempfile.mkdtemp(dir=kernels_folder()))
    (folder / "s").mkdir()
    return folder


def _can_unshare_net() -> bool:
    return shutil.which("unshare") is not None and os.geteuid() == 0


def capabilities() -> dict:
    """What isolation this machine gives, and a warning for each thing it cannot."""
    bwrap = shutil.which("bwrap")
    warnings = []
    if not bwrap:
        warnings.append(
            "bubblewrap (bwrap) is not installed: submissions can write outside their folder and read "
            "other students' work. Fix: apt-get install bubblewrap."
        )
        if not _can_unshare_net():
            warnings.append("no network isolation (needs bubblewrap, or root for `unshare -n`).")
    return {"bwrap": bwrap, "unshare_net": bool(bwrap) or _can_unshare_net(), "warnings": warnings}


def write_kernelspec(
    jupyter_dir: Path,
    writable: list[Path],
    hidden: list[Path],
    readable: list[Path],
    memory_mb: int = DEFAULT_MEMORY_MB,
    warm: str = "",
) -> Path:
    """A `python3` kernelspec (found first through JUPYTER_PATH) that starts the kernel via launch(), or
    forked from the warm-kernel zygote at address `warm` (peft_grader.warm) with the same isolation."""
    spec_dir = jupyter_dir / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    program = ["peft_grader.warm", "kernel", "--server", warm] if warm else ["peft_grader.sandbox"]
    argv = [sys.executable, "-m", *program, "--memory-mb", str(memory_mb)]
    argv += [a for p in writable for a in ("--writable", str(p))]
    argv += [a for p in hidden for a in ("--hide", str(p))]
    argv += [a for p in readable for a in ("--readable", str(p))]
    argv += ["--", sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    # Signals sent to the launcher would stop at bubblewrap: ask the kernel to interrupt itself instead.
    spec = {
        "argv": argv,
        "display_name": "Python 3 (grading sandbox)",
        "language": "python",
        "interrupt_mode": "message",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return spec_dir


def _limit(kind: int, value: int) -> None:
    import resource  # Unix only: imported where it is used, so importing this module works everywhere

    soft, hard = resource.getrlimit(kind)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    try:
        resource.setrlimit(kind, (value, value))
    except (OSError, ValueError):  # e.g. macOS refuses RLIMIT_AS: run without that limit
        print(f"peft_grader.sandbox: could not set resource limit {kind}", file=sys.stderr)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The launcher's arguments (the kernelspec's argv after the program): limits, folders, the command."""
    parser = argparse.ArgumentParser(prog="peft_grader.sandbox")
    parser.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB)
    parser.add_argument("--file-mb", type=int, default=DEFAULT_FILE_MB)
    parser.add_argument("--writable", action="append", default=[])
    parser.add_argument("--hide", action="append", default=[])
    parser.add_argument("--readable", action="append", default=[])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return args


def launch(argv: list[str] | None = None) -> None:
    """Exec the kernel command under limits and, where available, bubblewrap."""
    import resource

    args = parse(argv)
    command = args.command
    cwd = Path.cwd()

    _limit(resource.RLIMIT_AS, args.memory_mb * 2**20)
    _limit(resource.RLIMIT_FSIZE, args.file_mb * 2**20)
    _limit(resource.RLIMIT_CORE, 0)
    os.close(private_folder(cwd))
    os.environ.update({var: str(cwd / ".sandbox" / sub) for var, sub in PRIVATE_DIRS.items()})
    os.environ.update(KERNEL_ENV)

    bwrap = shutil.which("bwrap")
    if bwrap:
        prefix = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        for path in args.hide:
            prefix += ["--tmpfs", path]
        for path in args.readable:  # put back what a hidden folder holds that the kernel needs
            prefix += ["--ro-bind", path, path]
        for path in [*args.writable, str(cwd)]:  # the kernel's socket folder is among args.writable
            prefix += ["--bind", path, path]
        # A PID namespace of its own: a process the kernel leaves behind, detached or not, ends with it.
        # In it the kernel's parent is bubblewrap's init, so ipykernel must not watch for a parent PID.
        os.environ.pop("JPY_PARENT_PID", None)
        prefix += ["--unshare-net", "--unshare-ipc", "--unshare-pid", "--die-with-parent"]
        prefix += ["--chdir", str(cwd), "--"]
    elif _can_unshare_net():
        prefix = ["unshare", "-n", "--"]
    else:
        prefix = []
    os.execvp((prefix + command)[0], prefix + command)


if __name__ == "__main__":
    launch()
