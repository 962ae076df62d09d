"""Numeric conditions for rehearsing grading as on another machine, one environment variable.

`PEFT_COURSE_NUMERICS="threads=1,mkldnn=0,matmul=medium"` makes every grading kernel (through the
kernel guard) and the outside verification run torch with one thread, without oneDNN, and with fp32
matmuls allowed to use bf16 internally. Together with `ONEDNN_MAX_CPU_ISA=AVX2` (a CPU without native
bf16) it is how tests/test_numerics.py proves that no verdict depends on the CPU, and how an
instructor can check a new lab before a class grades on other machines.
"""

from __future__ import annotations

import os

from labutils.errors import CourseError

VARIABLE = "PEFT_COURSE_NUMERICS"


def parse(spec: str) -> dict[str, str]:
    settings = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, _, value = item.partition("=")
        if key not in ("threads", "mkldnn", "matmul") or not value:
            raise CourseError(
                f"{VARIABLE}: cannot read {item!r}. Fix: use threads=N, mkldnn=0|1, matmul=highest|high|medium."
            )
        settings[key] = value
    return settings


def apply(spec: str | None = None) -> dict[str, str]:
    """Apply the settings (from the variable by default) to torch in this process; returns them."""
    settings = parse(os.environ.get(VARIABLE, "") if spec is None else spec)
    if not settings:
        return settings
    import torch

    if "threads" in settings:
        torch.set_num_threads(int(settings["threads"]))
    if "mkldnn" in settings:
        torch.backends.mkldnn.enabled = settings["mkldnn"] not in ("0", "false", "off")
    if "matmul" in settings:
        torch.set_float32_matmul_precision(settings["matmul"])
    return settings
