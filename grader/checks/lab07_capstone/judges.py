"""Lab 07's judges: the capstone puts labs 01-06 together, so it is judged by lab 04's QLoRA rules and by the
Trainer's precision for the hardware (checks.hardware). Its own verdicts read files (files.py).
"""

from __future__ import annotations

from checks.hardware import precision_flags
from checks.lab04_qlora.judges import (
    kbit_prepared,
    llama_lora_config,
    loaded_in_4bit,
    quantization_config,
    trainable_share,
)

__all__ = [
    "kbit_prepared",
    "llama_lora_config",
    "loaded_in_4bit",
    "precision_flags",
    "quantization_config",
    "trainable_share",
]
