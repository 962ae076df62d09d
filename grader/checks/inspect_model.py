"""Reading real model state: quantized layers, LoRA layers, kbit preparation, saved adapters."""

from __future__ import annotations

import json
from pathlib import Path

import torch

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


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


def adapter_tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    """Tensors of a saved adapter, read from disk (never from the learner's kernel objects)."""
    st = adapter_dir / "adapter_model.safetensors"
    if st.exists():
        from safetensors.torch import load_file

        return load_file(st)
    return torch.load(adapter_dir / "adapter_model.bin", map_location="cpu", weights_only=True)


def full_weight_files(root: Path) -> list[Path]:
    """Files anywhere under root that hold a full model rather than an adapter."""
    found = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        name = path.name
        if (
            name == "config.json"
            or name in WEIGHT_FILES
            or (name.startswith(("model-", "pytorch_model-")) and name.endswith((".safetensors", ".bin")))
        ):
            found.append(path)
        elif name.endswith(".safetensors") and name != "adapter_model.safetensors":
            found.append(path)
    return sorted(found)


def read_adapter_config(adapter_dir: Path) -> dict:
    return json.loads((adapter_dir / "adapter_config.json").read_text())
