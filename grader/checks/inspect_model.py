"""Reading real model state: quantized layers, LoRA layers, kbit preparation (saved adapters: adapter_files)."""

from __future__ import annotations

from collections.abc import Collection

import torch

from checks import fail


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


def require_lora_model(
    ns: dict, model, arch: str, fix: str, foreign: tuple[str, Collection[str]] = ("", ())
) -> None:
    """Mistake 1 unless `model` is a PeftModel; says so where target_modules match nothing in `arch` (and
    where they are the names of the `foreign` architecture: its name and module names)."""
    if is_peft_model(model):
        return
    targets = getattr(ns.get("lora_config"), "target_modules", None)
    names = {leaf(n) for n, _ in model.named_modules()}
    if targets and not isinstance(targets, str) and not set(targets) & names:
        other = f" (those are {foreign[0]} names)" if set(targets) & set(foreign[1]) else ""
        fail(
            1,
            f"target_modules {sorted(targets)} match no module of this {arch} model{other}, so get_peft_model "
            "raised 'not found in the base model' and nothing was wrapped.",
            fix,
        )
    fail(
        1,
        "`model` is not a PeftModel, so no LoRA adapter is attached.",
        "model = get_peft_model(model, lora_config).",
    )


def require_adapters_on(model, wanted: Collection[str], arch: str, fix: str) -> set[str]:
    """The LoRA-wrapped module names; Mistake 1 if a module named in `wanted` carries no adapter (a
    partly wrong target list wraps too little, silently)."""
    wrapped = lora_wrapped(model)
    missing = sorted({n for n, _ in model.named_modules() if leaf(n) in wanted} - wrapped)
    if missing:
        names = ", ".join(sorted({leaf(n) for n in missing}))
        fail(
            1,
            f"{len(missing)} {arch} attention projections carry no adapter ({names} missing; target_modules "
            f"was {model.peft_config['default'].target_modules!r}). A partly wrong list is accepted silently.",
            fix,
        )
    return wrapped
