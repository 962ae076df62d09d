"""Hidden checks for lab 04 (QLoRA), one per correction-guide rule.

They read the objects the learner's cells produced (`bnb_config`, `model`) and the files in
`ADAPTER_DIR` / `OUTPUT_DIR`, never the learner's printed output. The object checks are decided from
plain data (checks.evidence): each records the config's fields or the model's manifest and a judge of
lab 04's judges decide, in the kernel and again, from the recorded data, outside it.
"""

from __future__ import annotations

from checks import need
from checks.evidence import model_record, publish
from checks.inspect_model import model_types
from checks.lab04_qlora import judges
from checks.lab04_qlora.files import adapter_only_saved, adapter_trained  # noqa: F401 (test cells call them here)

# A real transformers model or its PEFT wrapper: a look-alike object cannot stand in for one.
MODEL_TYPES = model_types()  # checks.inspect_model: one definition


def _model_record(ns: dict, check: str) -> dict:
    return model_record(ns, check, MODEL_TYPES, where="the loading cell")


def quantization_config(ns: dict) -> None:
    """The learner's BitsAndBytesConfig asks for 4-bit NF4, double quant and the hardware's compute dtype."""
    from transformers import BitsAndBytesConfig

    cfg = need(ns, "bnb_config", BitsAndBytesConfig)
    judges.quantization_config(publish("quantization_config", cfg.to_dict()))


def loaded_in_4bit(ns: dict) -> None:
    """The model really was loaded through the config: its linear layers are NF4 double-quant Linear4bit."""
    judges.loaded_in_4bit(_model_record(ns, "loaded_in_4bit"))


def kbit_prepared(ns: dict) -> None:
    """prepare_model_for_kbit_training ran on the 4-bit model (evidence that survives get_peft_model)."""
    judges.kbit_prepared(_model_record(ns, "kbit_prepared"))


def lora_config(ns: dict) -> None:
    """LoRA wraps exactly the Llama attention projections, with a sensible rank and alpha = 2r."""
    judges.llama_lora_config(_model_record(ns, "llama_lora_config"))


def trainable_share(ns: dict) -> None:
    """Only LoRA weights train, and they are well under 1% of the model (peft's own counter)."""
    judges.trainable_share(_model_record(ns, "trainable_share"))
