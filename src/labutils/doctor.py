"""`labutils doctor`: can this environment run every lab? One screen, one verdict, one exit code.

The report is a list of `Check`s (name, status, detail, fix) computed by small pure functions from
*probe results* (installed versions, hardware, an NF4 round trip, the profile, Colab). `collect()`
runs the real probes; tests pass `probes={...}` to simulate a T4, a broken bitsandbytes or a missing
package without touching torch internals. `main()` prints the report and returns 0 (ready) or 1.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import platform
import sys
import textwrap
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from labutils import profiles
from labutils.errors import CourseError
from labutils.facts import compute_dtype_name, training_dtype_name, training_precision
from labutils.torch_choice import probe_nvidia

OK, WARN, FAIL = "ok", "warn", "fail"
_STATUS_LABEL = {OK: "ok", WARN: "WARN", FAIL: "FAIL"}
_RANK = {OK: 0, WARN: 1, FAIL: 2}

# The packages a lab imports or the grader runs. Minimums mirror pyproject.toml (a test keeps them in sync).
PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "bitsandbytes",
    "accelerate",
    "datasets",
    "trl",
    "tokenizers",
    "matplotlib",
    "nbgrader",
    "jupyterlab",
    "nbclient",
    "distributed",
    "jupyterhub",
    "configurable-http-proxy",  # JupyterHub's proxy, an npm package (grader/hub/package.json)
)
MIN_VERSIONS = {
    "torch": "2.4",
    "transformers": "4.56",
    "peft": "0.17",
    "bitsandbytes": "0.48",
    "accelerate": "1.0",
    "datasets": "3.0",
    "trl": "1.0",
    "tokenizers": "0.21",
    "matplotlib": "3.8",
    "nbgrader": "0.9.5",
    "jupyterlab": "4.2",
    "nbclient": "0.10",
    "distributed": "2024.8",
    "jupyterhub": "5.0",
    "configurable-http-proxy": "5.3.0",  # grader/hub/package.json
}
MIN_PYTHON = (3, 10)
# What only the grader and a local JupyterLab need: a Colab runtime has its own notebook server, and the
# set-up cell installs the course without the `grader` extra.
GRADER_PACKAGES = ("nbgrader", "jupyterlab", "distributed", "jupyterhub", "configurable-http-proxy")
# What only the instructor's grading engine (peft_grader) needs: a learner's copy of a class (the bundle of
# `labutils release --bundle`) has no grader and does not need them; with the grader installed they are due.
INSTRUCTOR_PACKAGES = ("nbgrader", "distributed", "jupyterhub", "configurable-http-proxy")
SETUP_FIX = "make setup (or pip install -e .)"  # run in the course repository
COLAB_SETUP_FIX = (
    "rerun the set-up cell, then restart the session"  # the notebook's first code cell installs the course
)


def setup_fix(on_colab: bool) -> str:
    """How to (re)install the course where the learner is."""
    return COLAB_SETUP_FIX if on_colab else SETUP_FIX


# NF4 keeps 4 bits per weight; on Gaussian weights the round trip loses about 10% (relative L2).
# Far above that means the kernel is wrong, not merely lossy.
NF4_MAX_REL_ERROR = 0.15

WIDTH = 98  # every printed line stays under 100 columns
_STATUS_W, _NAME_W = 5, 14
_INDENT = " " * (_STATUS_W + 1 + _NAME_W + 1)


@dataclass(frozen=True)
class Check:
    """One row of the report. `fix` says what to run when status is warn/fail."""

    name: str
    status: str  # OK, WARN or FAIL
    detail: str
    fix: str = ""
    group: str = ""  # rows of one group (the package versions) are printed together
    summary: str = ""  # what failed, in a few words, for the verdict line


# --------------------------------------------------------------------------------------- probes
# Each probe looks at the real environment and returns plain data; `collect(probes=...)` can replace
# any of them with a fake result of the same shape.


def probe_versions() -> dict[str, str | None]:
    """Installed version of python and every course package (None: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    versions["configurable-http-proxy"] = _proxy_version()
    return versions


def _proxy_version() -> str | None:
    """The version of the configurable-http-proxy `make hub` would start: grader/hub's (npm ci), else PATH's."""
    import shutil
    import subprocess
    from pathlib import Path

    local = (
        Path(__file__).resolve().parents[2]
        / "grader"
        / "hub"
        / "node_modules"
        / ".bin"
        / "configurable-http-proxy"
    )
    command = str(local) if local.exists() else shutil.which("configurable-http-proxy")
    if not command:
        return None
    try:
        done = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def recommended_compute_dtype(cuda_available: bool, bf16_supported: bool):
    """The course's compute dtype for the hardware (labutils.facts.compute_dtype_name) as a torch.dtype."""
    import torch

    return getattr(torch, compute_dtype_name(cuda_available, bf16_supported))


def _cuda_bf16_native(torch_module) -> bool:
    # torch >= 2.3 answers True on pre-Ampere GPUs by default because bf16 can be *emulated*
    # there; the course wants native support, which decides bf16 vs fp16 on a T4.
    try:
        return bool(torch_module.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # older torch: no emulation argument, answer is already "native"
        return bool(torch_module.cuda.is_bf16_supported())


def _cpu_bf16_native() -> bool:
    """Whether the CPU advertises bf16 instructions (AVX512-BF16, AMX, Arm BF16); otherwise emulated."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def detect_hardware() -> dict[str, Any]:
    """The course device and its bf16 story, as plain data other code can reuse.

    Keys: cuda_available, device ("cuda"/"cpu"), device_name, capability ((major, minor) or None),
    bf16_supported (bf16 is native on this GPU; on CPU: always True, it works), bf16_native, and
    compute_dtype (see `recommended_compute_dtype`).
    """
    import torch

    cuda = bool(torch.cuda.is_available())
    if cuda:
        name = torch.cuda.get_device_name(0)
        capability = tuple(torch.cuda.get_device_capability(0))
        bf16 = native = _cuda_bf16_native(torch)
    else:
        name, capability, bf16, native = "CPU (no CUDA)", None, True, _cpu_bf16_native()
    return {
        "cuda_available": cuda,
        "device": "cuda" if cuda else "cpu",
        "device_name": name,
        "capability": capability,
        "bf16_supported": bf16,
        "bf16_native": native,
        "compute_dtype": recommended_compute_dtype(cuda, bf16),
        "torch_version": torch.__version__,
        "torch_cuda": torch.version.cuda,  # None for a CPU-only build
    }


# ---- the course's dtype helpers: what every lab calls instead of asking torch itself -------------------
# One rule (labutils.facts), one detection (detect_hardware): a lab, the doctor and the hidden checks
# (grader/checks/hardware.py) cannot disagree about bf16. Each asks torch when it is called, so a
# simulated machine (labutils.machines) or a new runtime is answered correctly.


def compute_dtype():
    """The dtype this machine computes in, as a torch.dtype: `bnb_4bit_compute_dtype` for a 4-bit model,
    and the dtype to load a 16-bit model in.

    torch.bfloat16 on a CUDA GPU with native bf16 (compute capability 8.0 or more: A100, L4, H100);
    torch.float16 on a CUDA GPU without it (a T4, a V100), where plain `torch.cuda.is_bf16_supported()`
    still says True because bf16 can be emulated (lab 00's trap); torch.bfloat16 on a CPU.
    """
    return detect_hardware()["compute_dtype"]


def training_dtype():
    """The dtype a model trains in on this machine, as a torch.dtype: what the Trainer's mixed-precision
    flags (`precision_flags()`) make it compute in. torch.bfloat16 on a GPU with native bf16, torch.float16 on
    a GPU without it (a T4), torch.float32 on a CPU (no mixed precision there)."""
    import torch

    hw = detect_hardware()
    return getattr(torch, training_dtype_name(hw["cuda_available"], hw["bf16_supported"]))


def precision_flags() -> dict[str, bool]:
    """The Trainer's mixed-precision flags for this machine: TrainingArguments(**precision_flags(), ...).
    {"fp16": True, "bf16": False} on a T4, {"fp16": False, "bf16": True} on Ampere or newer, neither on a CPU."""
    hw = detect_hardware()
    return training_precision(hw["cuda_available"], hw["bf16_supported"])


# ---- bitsandbytes' "pip install kernels" notice ------------------------------------------------------
# bitsandbytes 0.50.2 (bitsandbytes/backends/cpu/ops.py), when imported on a CPU with AVX512-BF16, tries to
# fetch a fused 4-bit CPU kernel (gemm_4bit_forward) from the Hugging Face Hub repository
# kernels-community/quantization-bitsandbytes through the optional `kernels` package. Without it, it logs a
# WARNING that asks for `pip install kernels` and keeps its own built-in CPU kernel
# (gemv_4bit_inference_cpu_nf4_bf16), which then serves the same eval-mode, no-grad 4-bit forward. GPUs never
# use either. Installing `kernels` only helps where the Hub is
# reachable (it downloads the kernel); the offline tiny profile cannot reach it, so the advice is noise
# here: the doctor says what it means (check_bnb_cpu_kernel), and the course's set-up (notebook.quiet) hides
# that one record where it runs before bitsandbytes is imported (peft imports it: quiet() must come first).
BNB_CPU_OPS_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_HUB_KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"


# ---- 4-bit layers that stay trainable on every CPU ---------------------------------------------------------
# bitsandbytes 0.50.2 (bitsandbytes/nn/modules.py, Linear4bit.forward), on a CPU with AVX512-BF16, repacks a
# 4-bit weight for that inference kernel at the layer's first eval-mode forward without gradients, and keeps
# it packed (only .cuda(), .xpu() and saving unpack it). From then on matmul_4bit takes the kernel's path
# (functional.gemv_4bit), which has no backward: a model evaluated before it trains (`trainer.evaluate()`
# first, as lab 07 measures) trains with no gradient through its 4-bit layers to the layers below, on such CPUs
# only (bench/README.md: 31% exact match instead of 92% on the world's capstone). The layer decides once, when
# it is built (`self.support_avx512bf16_for_cpu = has_avx512bf16()`), so the course answers that question "no"
# before any 4-bit model loads: the dequantize-then-matmul path every other CPU takes, with its backward.


#
# And the matmul itself: a 4-bit layer computing in bf16 dequantizes its weight to bf16 and calls torch's bf16
# matmul, which on a CPU without native bf16 (AVX2 only: most laptops; oneDNN capped at AVX2) is torch's
# reference loop: [384 x 256] @ [256 x 704] took 45 ms there against 0.64 ms with AVX512-BF16 and 1.4 ms in fp32
# (bench/README.md), so lab 07's training took minutes. A native bf16 GEMM multiplies bf16 numbers and sums in
# fp32, then rounds to bf16; on a CPU the course does exactly that in fp32 (the bf16 operands are exact in fp32),
# on every CPU alike, so the arithmetic is the same whichever CPU grades.


def _never_repack() -> bool:
    return False


def _matmul_4bit_summing_in_fp32(A, B, quant_state, out=None, bias=None):
    """bitsandbytes.matmul_4bit; on a CPU with bf16 operands, as a native bf16 GEMM computes it (see above)."""
    import torch
    from bitsandbytes.autograd._functions import matmul_4bit

    if A.device.type != "cpu" or A.dtype != torch.bfloat16 or out is not None:
        return matmul_4bit(A, B, quant_state, out=out, bias=bias)
    fp32_bias = None if bias is None else bias.float()
    return matmul_4bit(A.float(), B, quant_state, bias=fp32_bias).to(torch.bfloat16)


def keep_4bit_layers_trainable() -> None:
    """Make every 4-bit layer built from now on keep its weight in the trainable layout on a CPU, and compute its
    bf16 matmuls as a native bf16 GEMM does, summing in fp32 (see above): the same QLoRA training on every CPU,
    in seconds. Idempotent; notebook.quiet() calls it before a lab loads a model, and the grader's kernel guard
    before it takes its snapshot of the libraries."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import bitsandbytes
        import bitsandbytes.nn.modules as bnb_modules
    bnb_modules.has_avx512bf16 = _never_repack
    bitsandbytes.matmul_4bit = _matmul_4bit_summing_in_fp32  # what Linear4bit.forward calls (bnb.matmul_4bit)


class _HubKernelNotice(logging.Filter):
    """Drops only bitsandbytes' "pip install kernels" record; every other bitsandbytes message passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(BNB_HUB_KERNEL_NOTICE)


def hide_bnb_hub_kernel_notice() -> None:
    """Hide bitsandbytes' advice to `pip install kernels` (see above). Call it before bitsandbytes is first
    imported: the notice is logged once, at import. Idempotent."""
    logger = logging.getLogger(BNB_CPU_OPS_LOGGER)
    if not any(isinstance(f, _HubKernelNotice) for f in logger.filters):
        logger.addFilter(_HubKernelNotice())


def probe_bnb_cpu_kernel() -> str:
    """Which kernel bitsandbytes runs a 4-bit forward with on this CPU in eval mode: "none" (no AVX512-BF16:
    it dequantizes and multiplies, and never looks for the hub kernel), "builtin" (its own, because the hub
    kernel could not be loaded: the case of the notice) or "hub" (the kernels-community one)."""
    hide_bnb_hub_kernel_notice()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import bitsandbytes.backends.cpu.ops as ops
    if not hasattr(ops, "gemm_4bit_forward_kernel"):  # defined only where has_avx512bf16()
        return "none"
    return "builtin" if ops.gemm_4bit_forward_kernel is None else "hub"


def probe_nf4(device: str = "cpu", quantize: Callable | None = None, dequantize: Callable | None = None):
    """Quantize a small tensor to NF4 and back with bitsandbytes, on the course device.

    Returns {"ok", "device", "rel_error", "error"}. `quantize`/`dequantize` default to
    bitsandbytes.functional; tests pass a raising one to check the failure path.
    """
    result: dict[str, Any] = {"ok": False, "device": device, "rel_error": None, "error": None}
    try:
        import torch

        if quantize is None or dequantize is None:
            hide_bnb_hub_kernel_notice()  # explained by its own row (check_bnb_cpu_kernel)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import bitsandbytes.functional as bnbf
            quantize = quantize or bnbf.quantize_4bit
            dequantize = dequantize or bnbf.dequantize_4bit
        weights = torch.randn(64, 64, generator=torch.Generator().manual_seed(0)).to(device)
        packed, state = quantize(weights, quant_type="nf4")
        restored = dequantize(packed, state).float()
        rel = ((restored - weights).norm() / weights.norm()).item()
    except Exception as err:  # any failure here is the finding, reported with its text
        result["error"] = f"{type(err).__name__}: {err}".strip()
        return result
    result["rel_error"] = rel
    if rel < NF4_MAX_REL_ERROR:  # False for NaN as well
        result["ok"] = True
    else:
        result["error"] = f"relative error {rel:.3g} is above {NF4_MAX_REL_ERROR}"
    return result


def probe_profile() -> dict[str, str | None]:
    """The selected course profile, or the error an invalid PEFT_COURSE_PROFILE gives."""
    raw = os.environ.get(profiles.PROFILE_VAR)
    try:
        return {"name": profiles.current_profile(), "error": None, "raw": raw}
    except CourseError as err:
        return {"name": None, "error": str(err), "raw": raw}


def running_on_colab() -> bool:
    """True inside Google Colab (its `google.colab` module is loaded or importable)."""
    if "google.colab" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------------------------------- checks


def _version_tuple(text: str) -> tuple[int, ...]:
    # "2.13.0+cpu" -> (2, 13, 0); "5.0.0rc1" -> (5, 0, 0): enough for minimum-version checks.
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _grader_installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("peft_grader") is not None
    except (ImportError, ValueError):
        return False


def check_packages(
    versions: Mapping[str, str | None], on_colab: bool = False, grader: bool | None = None
) -> list[Check]:
    """One check per package: present and at least the version pyproject.toml asks for (on Colab, the
    grader's packages are not needed)."""
    checks, fix = [], setup_fix(on_colab)
    python = versions.get("python") or platform.python_version()
    if _version_tuple(python) < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        fix = f"use Python {need} or newer"
        checks.append(Check("python", FAIL, f"{python} (< {need})", fix, "packages", f"python < {need}"))
    else:
        checks.append(Check("python", OK, python, group="packages"))
    for package in PACKAGES:
        version = versions.get(package)
        minimum = MIN_VERSIONS.get(package)
        if version is None and on_colab and package in GRADER_PACKAGES:
            checks.append(Check(package, OK, "not needed on Colab", group="packages"))
        elif (
            version is None
            and package in INSTRUCTOR_PACKAGES
            and not (_grader_installed() if grader is None else grader)
        ):
            checks.append(
                Check(package, OK, "not needed: the grader is not installed here", group="packages")
            )
        elif version is None:
            checks.append(Check(package, FAIL, "MISSING", fix, "packages", f"{package} not installed"))
        elif minimum and _version_tuple(version) < _version_tuple(minimum):
            detail = f"{version} (too old: needs >={minimum})"
            checks.append(Check(package, FAIL, detail, fix, "packages", f"{package} too old"))
        else:
            checks.append(Check(package, OK, version, group="packages"))
    return checks


def _device_label(hw: Mapping[str, Any]) -> str:
    if not hw.get("cuda_available"):
        return "CPU (no CUDA)"
    capability = hw.get("capability")
    cc = f", compute capability {capability[0]}.{capability[1]}" if capability else ""
    return f"{hw.get('device_name', 'CUDA GPU')}{cc}"


def check_device(hw: Mapping[str, Any]) -> Check:
    return Check("device", OK, _device_label(hw))


def check_gpu_use(nvidia: Mapping[str, Any] | None, hw: Mapping[str, Any]) -> Check | None:
    """A row only where the machine has an NVIDIA GPU (`nvidia-smi` lists one) that torch cannot use: a
    CPU-only build, or a CUDA build newer than the driver (torch then says only a warning, and every lab
    would run on the CPU)."""
    if nvidia is None or hw.get("cuda_available"):
        return None
    gpus = ", ".join(nvidia.get("gpus") or ["an NVIDIA GPU"])
    torch_cuda, driver = hw.get("torch_cuda"), nvidia.get("cuda")
    version = hw.get("torch_version", "")
    if torch_cuda is None:
        why = f"torch {version} is a CPU-only build"
    elif driver is not None and tuple(int(x) for x in str(torch_cuda).split(".")[:2]) > tuple(driver):
        why = f"torch {version} needs CUDA {torch_cuda}; the driver supports CUDA {driver[0]}.{driver[1]}"
    else:
        why = f"torch {version} (CUDA {torch_cuda}) cannot initialise the GPU"
    fix = (
        "`.venv/bin/pip uninstall -y torch && rm .venv/.installed && make setup` (it picks the torch build "
        "this GPU's driver can run), or update the NVIDIA driver"
    )
    return Check("gpu", FAIL, f"this machine has {gpus}, but {why}", fix, summary="torch cannot use the GPU")


def check_bf16(hw: Mapping[str, Any]) -> Check:
    """bf16 support, honestly: native on Ampere+ GPUs, absent on a T4, emulated on most CPUs."""
    if hw.get("cuda_available"):
        if hw.get("bf16_supported"):
            return Check("bf16", OK, "supported natively by this GPU")
        return Check("bf16", OK, "not supported natively by this GPU (pre-Ampere): fp16 is used instead")
    if hw.get("bf16_native"):
        return Check("bf16", OK, "works on CPU, with native bf16 instructions")
    return Check("bf16", OK, "works on CPU, emulated (no native bf16 instructions): slower than fp32")


def check_compute_dtype(hw: Mapping[str, Any]) -> Check:
    dtype = recommended_compute_dtype(bool(hw.get("cuda_available")), bool(hw.get("bf16_supported")))
    name = str(dtype).replace("torch.", "")
    if hw.get("cuda_available"):
        why = "GPU with native bf16" if hw.get("bf16_supported") else "GPU without bf16, e.g. a T4"
    else:  # the same words as the bf16 row: native where the CPU has bf16 instructions, else emulated
        how = "native bf16 instructions" if hw.get("bf16_native") else "emulated bf16 works"
        why = f"CPU: {how}; the correction guide uses it"
    return Check("compute dtype", OK, f"{name} ({why})")


def check_bnb_cpu_kernel(kernel: str, hw: Mapping[str, Any]) -> Check | None:
    """A row only where bitsandbytes printed its "pip install kernels" notice and the labs compute on the CPU
    (on a GPU the kernel it is about never runs): what the notice means, in one line."""
    if kernel != "builtin" or hw.get("cuda_available"):
        return None
    return Check(
        "4-bit kernel",
        OK,
        "bitsandbytes has a built-in CPU kernel for 4-bit inference here, which the course's labs leave unused "
        "(a layer packed for it trains without gradients). Its notice to 'pip install kernels' is about an "
        "optional kernel downloaded from the Hugging Face Hub: not needed, ignore it",
    )


def check_nf4(result: Mapping[str, Any], on_colab: bool = False) -> Check:
    where = result.get("device", "cpu")
    if result.get("ok"):
        return Check(
            "nf4", OK, f"OK: quantize_4bit/dequantize_4bit on {where}, rel. error {result['rel_error']:.3f}"
        )
    error = result.get("error") or "unknown error"
    fix = f"{'!' if on_colab else ''}pip install --force-reinstall bitsandbytes" + (
        ", then Runtime > Restart session" if on_colab else ""
    )
    detail = f"FAIL: NF4 round trip on {where}: {error}"
    return Check("nf4", FAIL, detail, fix, summary="bitsandbytes cannot do NF4")


def check_profile(profile: Mapping[str, str | None], hw: Mapping[str, Any], on_colab: bool) -> Check:
    """The profile must be valid; hub without a GPU works but every model load and step is slow."""
    name = profile.get("name")
    if not name:
        valid = " or ".join(profiles.PROFILES)
        fix = f"export {profiles.PROFILE_VAR}={valid} (or unset it)"
        raw = profile.get("raw")
        detail = (
            f"{profiles.PROFILE_VAR}={raw!r} is not a course profile (valid: {', '.join(profiles.PROFILES)})"
            if raw is not None
            else profile.get("error") or "invalid profile"
        )
        return Check("profile", FAIL, detail, fix, summary="invalid profile")
    if name == "hub":
        if not hw.get("cuda_available"):
            fix = "Colab: Runtime > Change runtime type > T4 GPU" if on_colab else "use a CUDA GPU"
            fix += f", or {profiles.PROFILE_VAR}=tiny"
            return Check("profile", WARN, "hub (real models) without CUDA: works, but slow", fix)
        return Check("profile", OK, "hub (real hub models, downloaded on first use)")
    return Check("profile", OK, f"{name} (offline tiny models; {profiles.PROFILE_VAR}=hub for real models)")


def _tiny_cache_hint() -> str:
    # labutils.models owns the tiny-model cache. Building is slow, so only ask it where the cache is
    # and how many roles are already there; never build. Any problem just drops the hint.
    try:
        from labutils import models

        hint = f" in {models.cache_dir()}"
    except Exception:
        return ""
    try:
        built = sum(models.model_dir(role).is_dir() for role in profiles.ROLES)
        hint += f"; {built}/{len(profiles.ROLES)} built"
    except Exception:
        pass
    return hint


def check_models(profile_name: str) -> Check:
    """What `course_model(role)` resolves to, per role, without building or downloading anything."""
    if profile_name == "hub":
        ids = ", ".join(f"{role}={profiles.hub_model_id(role)}" for role in profiles.ROLES)
        return Check("models", OK, ids)
    roles = ", ".join(profiles.ROLES)
    return Check("models", OK, f"local tiny model (built on first use{_tiny_cache_hint()}) for: {roles}")


def check_colab(on_colab: bool, profile_name: str | None) -> Check:
    if not on_colab:
        return Check("colab", OK, "no")
    if profile_name == "tiny":
        fix = f"export {profiles.PROFILE_VAR}=hub on a GPU runtime to follow the workshop"
        return Check("colab", WARN, "yes, tiny profile: fine, but the workshop uses hub", fix)
    return Check("colab", OK, "yes")


# --------------------------------------------------------------------------------------- report


@dataclass
class Report:
    checks: list[Check]
    profile: str | None = None
    device: str = "CPU"
    hardware: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == WARN]

    @property
    def ready(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        return 0 if self.ready else 1

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def verdict(self) -> str:
        """Exactly one line, under 100 columns: ready, or what failed and the first fix to run."""
        if self.ready:
            n = len(self.warnings)
            warned = f"; {n} warning{'s' if n > 1 else ''} above" if n else ""
            for device in (self.device, "CUDA GPU" if self.device.startswith("CUDA") else self.device):
                line = (
                    "verdict: ready — this environment can run every lab "
                    f"({self.profile} profile, {device}{warned})."
                )
                if len(line) <= WIDTH:
                    break
            return line
        fails = self.failures
        fixes = list(dict.fromkeys(c.fix for c in fails if c.fix)) or ["see the rows above"]
        what = "; ".join(dict.fromkeys(c.summary or f"{c.name} failed" for c in fails))
        line = f"verdict: NOT READY — {what}. Fix: {fixes[0]}."
        if len(fixes) > 1 or len(line) > WIDTH:  # the rows above carry every detail and fix
            rows = len(dict.fromkeys(c.group or c.name for c in fails))  # as printed above
            n = f"{rows} checks" if rows > 1 else "1 check"
            line = f"verdict: NOT READY — {n} failed (FAIL above). Fix: {fixes[0]}."
            if len(line) > WIDTH:
                line = f"verdict: NOT READY — {n} failed (FAIL above). Fix: see the fix lines above."
        return line

    def render(self) -> str:
        lines = ["labutils doctor — can this environment run the PEFT course labs?"]
        lines.append(f"{'':<{_STATUS_W}} {'check':<{_NAME_W}} detail")
        seen_groups: set[str] = set()
        for c in self.checks:
            if c.group:
                if c.group in seen_groups:
                    continue
                seen_groups.add(c.group)
                members = [m for m in self.checks if m.group == c.group]
                status = max((m.status for m in members), key=_RANK.__getitem__)
                detail = ", ".join(f"{m.name}{_NBSP}{m.detail}".replace(" ", _NBSP) for m in members)
                fixes = list(dict.fromkeys(m.fix for m in members if m.fix and m.status != OK))
                lines += _row(status, c.group, detail, fixes)
            else:
                lines += _row(c.status, c.name, c.detail, [c.fix] if c.fix and c.status != OK else [])
        lines.append(self.verdict())
        return "\n".join(lines)


_NBSP = "\xa0"  # joins "name version" so a wrapped line never splits the pair (textwrap keeps it)


def _wrap(text: str, first: str) -> list[str]:
    lines = textwrap.wrap(
        text, WIDTH, initial_indent=first, subsequent_indent=_INDENT, break_on_hyphens=False
    )
    return [line.replace(_NBSP, " ") for line in lines] or [first.rstrip()]


def _row(status: str, name: str, detail: str, fixes: list[str]) -> list[str]:
    lines = _wrap(detail, f"{_STATUS_LABEL[status]:<{_STATUS_W}} {name:<{_NAME_W}} ")
    for fix in fixes:
        lines += _wrap(f"fix: {fix}", _INDENT)
    return lines


def _hardware_or_failure(on_colab: bool) -> dict[str, Any] | Check:
    try:
        return detect_hardware()
    except Exception as err:  # e.g. torch missing or broken: the packages row says why
        detail = f"cannot inspect the device: {type(err).__name__}: {err}"
        return Check("device", FAIL, detail, setup_fix(on_colab), summary="torch cannot inspect the device")


def _bnb_cpu_kernel_or_none() -> str:
    try:
        return probe_bnb_cpu_kernel()
    except Exception:  # bitsandbytes missing or broken: the packages and nf4 rows say so
        return "none"


def collect(probes: Mapping[str, Any] | None = None) -> Report:
    """Run the probes (or use the fakes in `probes`) and turn them into checks.

    `probes` keys, each optional: "versions" (dict package -> version or None, plus "python"),
    "hardware" (a `detect_hardware()`-shaped dict), "nf4" (a `probe_nf4()`-shaped dict),
    "bnb_cpu_kernel" (`probe_bnb_cpu_kernel()`'s answer), "profile" ({"name": ..., "error": ...}),
    "colab" (bool), "nvidia" (`labutils.torch_choice.probe_nvidia()`'s answer: the GPUs nvidia-smi lists).
    """
    probes = dict(probes or {})
    on_colab = bool(probes["colab"]) if "colab" in probes else running_on_colab()
    checks = check_packages(probes["versions"] if "versions" in probes else probe_versions(), on_colab)

    hw = probes["hardware"] if "hardware" in probes else _hardware_or_failure(on_colab)
    if isinstance(hw, Check):
        checks.append(hw)
        hw = {"cuda_available": False, "device": "cpu"}
    else:
        checks += [check_device(hw), check_bf16(hw), check_compute_dtype(hw)]
    nvidia = probes["nvidia"] if "nvidia" in probes else probe_nvidia()
    if (row := check_gpu_use(nvidia, hw)) is not None:
        checks.append(row)
    device = "cuda" if hw.get("cuda_available") else "cpu"

    checks.append(check_nf4(probes["nf4"] if "nf4" in probes else probe_nf4(device), on_colab))
    kernel = probes["bnb_cpu_kernel"] if "bnb_cpu_kernel" in probes else _bnb_cpu_kernel_or_none()
    if (row := check_bnb_cpu_kernel(kernel, hw)) is not None:
        checks.append(row)

    profile = probes["profile"] if "profile" in probes else probe_profile()
    checks.append(check_profile(profile, hw, on_colab))
    if profile.get("name"):
        checks.append(check_models(profile["name"]))
    checks.append(check_colab(on_colab, profile.get("name")))

    label = f"CUDA: {hw.get('device_name', 'GPU')}" if hw.get("cuda_available") else "CPU"
    return Report(checks, profile=profile.get("name"), device=label, hardware=dict(hw))


def main() -> int:
    """Print the report; 0 when every lab can run here (warnings allowed), 1 otherwise."""
    report = collect()
    print(report.render())
    return report.exit_code
