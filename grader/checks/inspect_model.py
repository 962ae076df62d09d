"""Reading real model state: quantized layers, LoRA layers, kbit preparation (saved adapters: adapter_files)."""

from __future__ import annotations

import torch


def base_model(model):
    """The transformers model under any PEFT wrapping."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def is_peft_model(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def linear4bit_layers(model) -> dict[str, torch.nn.Module]:
    import bitsandbytes as bnb

    return {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}


def linear8bit_layers(model) -> dict[str, torch.nn.Module]:
    import bitsandbytes as bnb

    return {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear8bitLt)}


def lora_wrapped(model) -> set[str]:
    """Full names of the modules that carry a LoRA adapter (what really got wrapped)."""
    from peft.tuners.lora import LoraLayer

    return {n for n, m in model.named_modules() if isinstance(m, LoraLayer)}


def leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def unprepared_parameters(model) -> list[str]:
    """Non-quantized, non-LoRA floating-point base parameters not upcast to fp32.

    prepare_model_for_kbit_training casts them to fp32; the course checkpoints are bf16, so any left
    in bf16/fp16 is evidence that preparation did not happen (FACTS.md).
    """
    import bitsandbytes as bnb

    bad = []
    for name, param in base_model(model).named_parameters():
        if isinstance(param, bnb.nn.Params4bit) or "lora_" in name or "modules_to_save" in name:
            continue
        if param.is_floating_point() and param.dtype in (torch.float16, torch.bfloat16):
            bad.append(name)
    return bad
