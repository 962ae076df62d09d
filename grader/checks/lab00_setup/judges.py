"""Lab 00's judge: the bnb_config a learner built, for the hardware grading runs on."""

from __future__ import annotations

from checks import QLORA_CONFIG, fail
from checks.hardware import expected_compute_dtype, hardware
from checks.lab04_qlora.judges import nf4_double_quant


def bnb_config_here(cfg: dict) -> None:
    """bnb_config is the guide's QLoRA config with the compute dtype right for the real hardware."""
    nf4_double_quant(cfg)
    hw = hardware()
    want = expected_compute_dtype()
    got = str(cfg["bnb_4bit_compute_dtype"]).removeprefix("torch.")
    if got != want:
        where = hw["device_name"] if hw["cuda_available"] else "this CPU"
        fail(
            QLORA_CONFIG,
            f"bnb_4bit_compute_dtype is {got}, but on {where} the compute dtype is {want} (the doctor's "
            "'compute dtype' row).",
            "bnb_4bit_compute_dtype=choose_compute_dtype(), with choose_compute_dtype() from exercise 1.",
        )
