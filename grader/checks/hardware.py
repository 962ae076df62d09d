"""The machine grading runs on, and the rules that depend on it (the dtype rule itself: labutils.facts).

Standard library only: the outside process asks the grader's one detection (HARDWARE_VAR) instead of
loading torch. Labs 04 and 07 judge the compute dtype by it, labs 07 and 09 the Trainer's precision flags.
"""

from __future__ import annotations

import json
import os

from checks import fail
from labutils.facts import compute_dtype_name, training_precision

PRECISION = (
    "Mixed precision for the hardware: fp16=True on a GPU without bf16 (T4), bf16=True on Ampere "
    "or newer, neither on a CPU"
)


HARDWARE_VAR = "PEFT_COURSE_HARDWARE"  # the grading machine's hardware as JSON, set for the outside process


def hardware() -> dict:
    """The grading machine's hardware (labutils.doctor.detect_hardware's cuda_available, bf16_supported
    and device_name): detected here, or as the grader detected it once for a whole class (HARDWARE_VAR),
    which spares each fresh outside process loading torch to ask."""
    known = os.environ.get(HARDWARE_VAR)
    if known:
        return json.loads(known)
    from labutils.doctor import detect_hardware

    return detect_hardware()


def expected_compute_dtype() -> str:
    """The compute dtype for the hardware grading runs on, by name: bfloat16, or float16 on a GPU without bf16."""
    hw = hardware()
    return compute_dtype_name(hw["cuda_available"], hw["bf16_supported"])


def expected_precision() -> dict[str, bool]:
    """The Trainer flags for the hardware grading runs on: {"fp16": ..., "bf16": ...}."""
    hw = hardware()
    return training_precision(hw["cuda_available"], hw["bf16_supported"])


def where() -> str:
    hw = hardware()
    if not hw["cuda_available"]:
        return "a CPU"
    return f"a GPU {'with' if hw['bf16_supported'] else 'without'} native bf16 ({hw['device_name']})"


def precision_flags(got: dict) -> None:
    """The TrainingArguments the Trainer really used set fp16/bf16 exactly as the hardware needs."""
    want = expected_precision()
    if got != want:
        shown = ", ".join(f"{k}={v}" for k, v in got.items())
        fix = ", ".join(f"{k}={v}" for k, v in want.items())
        fail(
            PRECISION,
            f"the Trainer ran with {shown} on {where()}. fp16 autocast on a CPU is accepted silently "
            "and only makes training slower; bf16 is for GPUs that have it natively (Ampere or newer); "
            "a T4 needs fp16.",
            f"{fix} here: choose them from torch.cuda.is_available() and "
            "torch.cuda.is_bf16_supported(including_emulation=False).",
        )
