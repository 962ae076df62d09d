"""Which torch build this machine needs, and whether the installed one can use the GPU the machine has.

`make setup` runs this file with the new venv's Python before anything else is installed (standard library
only):

    python src/labutils/torch_choice.py torch==2.13.0

* No NVIDIA GPU (no `nvidia-smi`, or it lists none): PyTorch's CPU wheels (`download.pytorch.org/whl/cpu`),
  a few hundred MB, never the CUDA build that PyPI serves by default (several GB). Where that index cannot
  be reached, what pip can reach is installed, with one line saying so (here: a CPU wheel placed beside pip).
* An NVIDIA GPU: a CUDA build its driver can run. `nvidia-smi` prints the newest CUDA the driver supports;
  PyPI's default build of torch 2.13 needs CUDA 13, and PyTorch's own index serves builds for older drivers
  (`CUDA_BUILDS`). A driver older than all of them gets a message saying to update it.
* `TORCH_INDEX=URL` overrides the choice (any of PyTorch's indexes, or a mirror).

The doctor (`labutils.doctor`) asks `probe_nvidia()` too, and calls a torch that cannot see the machine's GPU
NOT READY.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request

PYTORCH_INDEX = "https://download.pytorch.org/whl"
# The CUDA builds PyTorch publishes beside the CPU one (for 2.10: CUDA 12.6, 12.8 and 13.0, in PyTorch's
# announcement of its 2.10 wheels), newest first: (the driver's CUDA version it needs, its index, or None for
# PyPI's default build, which is CUDA 13's).
CUDA_BUILDS = ((13, 0, None), (12, 8, "cu128"), (12, 6, "cu126"))


def probe_nvidia(command: str = "nvidia-smi") -> dict | None:
    """The NVIDIA GPUs `nvidia-smi` lists and the newest CUDA version their driver supports, or None where
    there is no `nvidia-smi` or it fails (no GPU, no driver)."""
    try:
        listing = subprocess.run([command, "-L"], capture_output=True, text=True, timeout=20)
        header = subprocess.run([command], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = [
        line.split(" (UUID")[0].split(": ", 1)[-1]
        for line in listing.stdout.splitlines()
        if line.startswith("GPU ")
    ]
    if listing.returncode != 0 or not gpus:
        return None
    found = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", header.stdout)
    return {"gpus": gpus, "cuda": (int(found[1]), int(found[2])) if found else None}


def reachable(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except Exception:  # noqa: BLE001 - offline, blocked, no DNS: all mean "not reachable"
        return False


def choose(
    spec: str, nvidia: dict | None, cpu_index_reachable: bool, override: str = ""
) -> tuple[list[str], str]:
    """The arguments for `pip install` and one line saying what they install, and why."""
    if override:
        return [spec, "--index-url", override], f"{spec} from TORCH_INDEX={override}"
    if nvidia is None:
        if cpu_index_reachable:
            return [spec, "--index-url", f"{PYTORCH_INDEX}/cpu"], f"{spec}, CPU build (no NVIDIA GPU here)"
        return [spec], (
            f"{spec} from pip's own index: no NVIDIA GPU here, and PyTorch's CPU index ({PYTORCH_INDEX}/cpu) "
            "cannot be reached; where pip's index is PyPI this is the multi-GB CUDA build (set TORCH_INDEX to a "
            "mirror of the CPU index to avoid it)"
        )
    gpus = ", ".join(nvidia["gpus"])
    cuda = nvidia.get("cuda")
    if cuda is None:  # a driver that does not say: PyPI's default, and the doctor checks it can see the GPU
        return [
            spec
        ], f"{spec}, PyPI's CUDA build ({gpus}; nvidia-smi did not give the driver's CUDA version)"
    for major, minor, index in CUDA_BUILDS:
        if cuda >= (major, minor):
            where = "PyPI's default" if index is None else f"{PYTORCH_INDEX}/{index}"
            args = [spec] if index is None else [spec, "--index-url", f"{PYTORCH_INDEX}/{index}"]
            return (
                args,
                f"{spec}, CUDA {major}.{minor} build from {where} ({gpus}; driver supports CUDA {cuda[0]}.{cuda[1]})",
            )
    oldest = f"{CUDA_BUILDS[-1][0]}.{CUDA_BUILDS[-1][1]}"
    raise SystemExit(
        f"error: this GPU's driver supports CUDA {cuda[0]}.{cuda[1]}, older than any build of {spec} ({oldest} or "
        f"newer). Update the NVIDIA driver, or run `make setup TORCH_INDEX={PYTORCH_INDEX}/cpu` to use the CPU."
    )


def main(argv: list[str] | None = None) -> int:
    spec = (argv if argv is not None else sys.argv[1:] or ["torch"])[0]
    nvidia = probe_nvidia()
    override = os.environ.get("TORCH_INDEX", "")
    cpu_reachable = nvidia is None and not override and reachable(f"{PYTORCH_INDEX}/cpu/torch/")
    args, why = choose(spec, nvidia, cpu_reachable, override)
    print(f"installing {why}", flush=True)
    return subprocess.call([sys.executable, "-m", "pip", "install", "-q", *args])


if __name__ == "__main__":
    sys.exit(main())
