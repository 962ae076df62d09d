"""A model as plain data, and the readers of it: live model state (quantized layers, LoRA layers) turned into a
manifest (checks.evidence), which the labs' judges read through the functions at the end of this module, standard
library only (torch and the libraries are imported inside the functions that read a live model). Saved adapters:
checks.adapter_files.
"""

from __future__ import annotations

from collections.abc import Collection

from checks import fail


def base_model(model):
    """The transformers model under any PEFT wrapping."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def model_types() -> tuple:
    """What a check accepts as the learner's `model`: a transformers model, or a peft wrapper of one."""
    from peft import PeftModel
    from transformers import PreTrainedModel

    return (PreTrainedModel, PeftModel)


def is_peft_model(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def lora_wrapped(model) -> set[str]:
    """Full names of the modules that carry a LoRA adapter (what really got wrapped)."""
    from peft.tuners.lora import LoraLayer

    return {n for n, m in model.named_modules() if isinstance(m, LoraLayer)}


def manifest(model, lora_config=None) -> dict:
    """`model` as plain data (checks.evidence): the kind of every module, every parameter's dtype,
    `requires_grad`, size and 4-bit storage, the checkpointing flag, peft's own trainable counter and
    the adapters' configs. Read through the library classes' own methods, so methods put on the
    learner's instance cannot answer for the model. `lora_config`: the learner's config variable, whose
    target names explain a model that get_peft_model never wrapped."""
    import bitsandbytes as bnb
    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper
    from transformers import PreTrainedModel

    peft = isinstance(model, PeftModel)
    base = PeftModel.get_base_model(model) if peft else model
    modules, quantized = {}, {}
    for name, module in torch.nn.Module.named_modules(model):
        kind = ""
        if isinstance(module, LoraLayer):
            kind = "lora"
        elif isinstance(module, ModulesToSaveWrapper):
            kind = "modules_to_save"
        elif isinstance(module, bnb.nn.Linear8bitLt):
            kind = "linear8bit"
        elif isinstance(module, bnb.nn.Linear4bit):
            kind, weight = "linear4bit", module.weight
            state = getattr(weight, "quant_state", None)
            quantized[name] = {
                "quant_type": getattr(weight, "quant_type", None),
                "nested": bool(state is not None and state.nested),
                "compute_dtype": module.compute_dtype,
            }
        modules[name] = kind
    return {
        "type": f"{type(model).__module__}.{type(model).__qualname__}",
        "base_type": type(base).__name__,
        "model_type": getattr(getattr(base, "config", None), "model_type", None),
        "peft": peft,
        "active_adapter": getattr(model, "active_adapter", None) if peft else None,
        "base_prefix": "base_model.model." if peft else "",
        "base_children": list(torch.nn.Module.__getattribute__(base, "_modules")),
        "modules": modules,
        "linear4bit": quantized,
        # name: [dtype, requires_grad, number of elements, stored as 4-bit]
        "parameters": {
            name: [p.dtype, p.requires_grad, p.numel(), isinstance(p, bnb.nn.Params4bit)]
            for name, p in torch.nn.Module.named_parameters(model)
        },
        "gradient_checkpointing": bool(
            isinstance(base, PreTrainedModel) and PreTrainedModel.is_gradient_checkpointing.fget(base)
        ),
        "trainable_total": list(PeftModel.get_nb_trainable_parameters(model)) if peft else None,
        "peft_config": {k: v.to_dict() for k, v in model.peft_config.items()} if peft else {},
        "lora_config_targets": getattr(lora_config, "target_modules", None),
    }


# ---- reading a manifest (plain data) ----------------------------------------------------------------
def leaf(name: str) -> str:
    """A module's own name, without its parents: model.layers.0.self_attn.q_proj -> q_proj."""
    return name.rsplit(".", 1)[-1]


def active_config(record: dict) -> dict:
    """The active adapter's config, from a PeftModel's manifest."""
    active = record["active_adapter"]
    active = active[0] if isinstance(active, list) else active
    return record["peft_config"].get(active) or next(iter(record["peft_config"].values()))


def lora_names(record: dict) -> set[str]:
    """Full names of the modules that carry a LoRA adapter, from a manifest."""
    return {n for n, kind in record["modules"].items() if kind == "lora"}


def require_lora_model(
    record: dict, arch: str, fix: str, foreign: tuple[str, Collection[str]] = ("", ())
) -> None:
    """Mistake 1 unless the manifest is a PeftModel's; says so where target_modules match nothing in
    `arch` (and where they are the names of the `foreign` architecture: its name and module names)."""
    if record["peft"]:
        return
    targets = record["lora_config_targets"]
    names = {leaf(n) for n in record["modules"]}
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


def require_adapters_on(record: dict, wanted: Collection[str], arch: str, fix: str) -> set[str]:
    """The LoRA-wrapped module names; Mistake 1 if a module named in `wanted` carries no adapter (a
    partly wrong target list is accepted silently)."""
    wrapped = lora_names(record)
    missing = sorted({n for n in record["modules"] if leaf(n) in wanted} - wrapped)
    if missing:
        names = ", ".join(sorted({leaf(n) for n in missing}))
        targets = active_config(record)["target_modules"]
        fail(
            1,
            f"{len(missing)} {arch} attention projections carry no adapter ({names} missing; target_modules "
            f"was {targets!r}). A partly wrong list is accepted silently.",
            fix,
        )
    return wrapped
