"""A model as plain data, and the readers of it: live model state (quantized layers, LoRA layers) turned into a
manifest (checks.evidence), which the labs' judges read through the functions at the end of this module, standard
library only (torch and the libraries are imported inside the functions that read a live model). Saved adapters:
checks.adapter_files.
"""

from __future__ import annotations

from collections.abc import Collection

from checks import TASK_TYPE, fail


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


def _fields(obj) -> dict:
    """An object's own attributes, read without its methods: a module's _modules and _parameters."""
    return object.__getattribute__(obj, "__dict__")


def walk(model) -> list[tuple[str, object]]:
    """(name, module) for `model` and every submodule, in the order torch's named_modules() gives them, read
    from each module's own `_modules` table: no method of any module runs (a module of the learner's own
    class could answer for the model, or run code inside the check)."""
    found, seen = [], set()

    def visit(prefix: str, module) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        found.append((prefix, module))
        for name, child in dict.items(_fields(module).get("_modules", {})):
            if child is not None:
                visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", model)
    return found


def parameters(model) -> list[tuple[str, object]]:
    """(name, parameter) in the order torch's named_parameters() gives them, from the modules' own tables."""
    found, seen = [], set()
    for prefix, module in walk(model):
        for name, param in dict.items(_fields(module).get("_parameters", {})):
            if param is not None and id(param) not in seen:
                seen.add(id(param))
                found.append((f"{prefix}.{name}" if prefix else name, param))
    return found


def _double_quantized(state, bnb) -> bool:
    """Whether a 4-bit weight was stored with double quantization. On a CPU, bitsandbytes repacks a weight for
    its inference kernel after an eval-mode forward (`trainer.evaluate()`): it dequantizes the absmax then, sets
    `nested` False and keeps the stored value as `original_nested`, which it restores before the weight trains
    or is saved."""
    if type(state) is not bnb.functional.QuantState:
        return False
    if getattr(state, "packing_format_for_cpu", False):
        return bool(getattr(state, "original_nested", state.nested))
    return bool(state.nested)


def checkpointing(model) -> bool:
    """Whether `model` checkpoints activations when it trains, read where transformers' forward reads it: a
    GradientCheckpointingLayer (a decoder or encoder layer) calls its own `_gradient_checkpointing_func` when its own
    `gradient_checkpointing` is True, and gradient_checkpointing_enable() (peft's prepare_model_for_kbit_training, the
    Trainer's flag) sets both on every such layer: torch's checkpoint, or a functools.partial of it or of
    transformers' own offloading wrapper of it. The flag on another module (the head, a norm), or beside a function
    of the learner's, checkpoints nothing."""
    import functools
    import types

    import torch.utils.checkpoint
    from transformers import modeling_utils
    from transformers.modeling_layers import GradientCheckpointingLayer

    enable = modeling_utils.PreTrainedModel._activation_checkpointing_enable
    wrappers = [c for c in enable.__code__.co_consts if isinstance(c, types.CodeType)]
    torch_own = (torch.utils.checkpoint.checkpoint, modeling_utils.checkpoint)
    for _, module in walk(model):
        if not issubclass(type(module), GradientCheckpointingLayer):
            continue
        fields = _fields(module)
        func = fields.get("_gradient_checkpointing_func")
        while type(func) is functools.partial:
            func = func.func
        own = any(func is f for f in torch_own) or (
            type(func) is types.FunctionType and any(func.__code__ is code for code in wrappers)
        )
        if fields.get("gradient_checkpointing") is True and own:
            return True
    return False


def manifest(model, lora_config=None) -> dict:
    """`model` as plain data (checks.evidence): the kind of every module, every parameter's dtype,
    `requires_grad`, size and 4-bit storage (as its quant_state dequantizes it), whether its layers checkpoint
    (checkpointing), peft's trainable counter and the adapters' configs. Read from the modules' and tensors' own
    tables and through the library classes' own functions, so nothing the learner put on an instance or a subclass
    answers for the model or runs while it is read. `lora_config`: the learner's config variable, whose target
    names explain a model that get_peft_model never wrapped."""
    import bitsandbytes as bnb
    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    peft = issubclass(type(model), PeftModel)
    base = _fields(_fields(model)["_modules"]["base_model"])["_modules"]["model"] if peft else model
    modules, quantized = {}, {}
    for name, module in walk(model):
        kind, cls = "", type(module)
        if issubclass(cls, LoraLayer):
            kind = "lora"
        elif issubclass(cls, ModulesToSaveWrapper):
            kind = "modules_to_save"
        elif issubclass(cls, bnb.nn.Linear8bitLt):
            kind = "linear8bit"
        elif issubclass(cls, bnb.nn.Linear4bit):
            kind, weight = "linear4bit", _fields(module)["_parameters"].get("weight")
            # bitsandbytes' own objects, read as bitsandbytes reads them (never a learner's subclass of them)
            four_bit = type(weight) is bnb.nn.Params4bit
            state = getattr(weight, "quant_state", None) if four_bit else None
            quantized[name] = {
                # what dequantization uses (the weight's own `quant_type` is a label no forward reads)
                "quant_type": state.quant_type if type(state) is bnb.functional.QuantState else None,
                "nested": _double_quantized(state, bnb),
                "compute_dtype": _fields(module).get("compute_dtype"),
            }
        modules[name] = kind
    table, trainable, total = {}, 0, 0
    with torch._C.DisableTorchFunction():  # a tensor subclass's __torch_function__ does not answer either
        for name, p in parameters(model):
            four_bit = issubclass(type(p), bnb.nn.Params4bit)
            grad = bool(torch.Tensor.requires_grad.__get__(p))
            size = torch.Tensor.numel(p)
            # peft's own counter (PeftModel.get_nb_trainable_parameters): 4-bit storage packs two per byte
            counted = size * 2 * torch.Tensor.element_size(p) if four_bit else size
            total += counted
            trainable += counted if grad else 0
            # name: [dtype, requires_grad, number of elements, stored as 4-bit]
            table[name] = [torch.Tensor.dtype.__get__(p), grad, size, four_bit]
    tuner = _fields(_fields(model)["_modules"]["base_model"]) if peft else {}
    adapters, active = tuner.get("peft_config", {}), _fields(model).get("active_adapter") if peft else None
    return {
        "type": f"{type(model).__module__}.{type(model).__qualname__}",
        "base_type": type(base).__name__,
        "model_type": getattr(type(_fields(base).get("config")), "model_type", None),
        "peft": peft,
        "active_adapter": active,
        "base_prefix": "base_model.model." if peft else "",
        "base_children": list(_fields(base).get("_modules", {})),
        "modules": modules,
        "linear4bit": quantized,
        "parameters": table,
        "gradient_checkpointing": checkpointing(base),
        "trainable_total": [trainable, total] if peft else None,
        "peft_config": {k: v.to_dict() for k, v in dict.items(adapters)},
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


# What config_as_asked reads of a LoraConfig (its to_dict()): what a check that builds its own model records.
CONFIG_FIELDS = ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "task_type")


def config_as_asked(cfg: dict, what: str, r: int, alpha: int, task_type: str = "") -> None:
    """Mistake 2 unless `cfg` (a LoraConfig's to_dict(), or a manifest's peft_config entry) gives every layer the
    rank and alpha the exercise asks for; the task-type rule unless it has the exercise's `task_type` (where
    given). A rank_pattern or alpha_pattern that gives some layers other values is not the rank asked for."""
    ranks = sorted({cfg["r"], *(cfg.get("rank_pattern") or {}).values()}, key=repr)
    alphas = sorted({cfg["lora_alpha"], *(cfg.get("alpha_pattern") or {}).values()}, key=repr)
    if ranks != [r] or alphas != [alpha]:
        shown_r = ranks[0] if len(ranks) == 1 else f"{ranks} (rank_pattern)"
        shown_alpha = alphas[0] if len(alphas) == 1 else f"{alphas} (alpha_pattern)"
        fail(
            2,
            f"{what} has r={shown_r}, lora_alpha={shown_alpha}; the exercise asks for r={r}, lora_alpha={alpha} "
            f"(the guide's rank range, alpha = 2r), so that what the lab measures and shows is that adapter.",
            f"LoraConfig(r={r}, lora_alpha={alpha}, ...).",
        )
    given = cfg.get("task_type")  # a TaskType enum is a str: it compares (and is recorded) as its text
    if task_type and given != task_type:
        fail(
            TASK_TYPE,
            f"{what} has task_type={given!r}: peft then builds a plain PeftModel instead of the "
            f"{task_type} model class, and the saved adapter_config.json does not say what the adapter is for.",
            f"LoraConfig(..., task_type={task_type!r}) (or TaskType.{task_type}).",
        )


def peft_model_or_fail(base, config, arch: str, fix: str):
    """get_peft_model(base, config) on a check's own fresh base; Mistake 1 where the config's target_modules
    match nothing in it (peft raises 'not found in the base model')."""
    from peft import get_peft_model

    try:
        return get_peft_model(base, config)
    except ValueError as err:  # peft's NoMatchingPeftModuleError is a ValueError
        if "not found in the base model" not in str(err):
            raise
        fail(
            1,
            f"target_modules={config.target_modules!r} match no module of the {arch} model, so get_peft_model "
            "raises 'not found in the base model' and nothing can be wrapped.",
            fix,
        )
