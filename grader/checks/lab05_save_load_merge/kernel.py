"""Hidden checks for lab 05 (save the adapter, load it, merge only to deploy).

The on-disk checks (adapter folder, deployment folder) live in files.py, standard library only, and
run again outside the kernel. The checks here need torch: they compare the learner's real objects with the saved
files, tensor by tensor, never printed numbers, and never call a method or hook of the learner's objects.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from checks import error_text, fail, need
from checks.adapter_files import read_adapter_config, saved_adapter_dir
from checks.evidence import tensor_digest
from checks.inspect_model import _fields, lora_wrapped, parameters, walk
from checks.lab05_save_load_merge.files import (  # noqa: F401 (the test cells call them here too)
    DEPLOY_RULE,
    adapter_only_saved,
    deploy_copy_saved,
)

RELOAD_RULE = (
    "For inference, load the saved adapter onto a fresh base: PeftModel.from_pretrained(base, ADAPTER_DIR)"
)
RELOAD_FIX = (
    "reloaded = PeftModel.from_pretrained(fresh_base, ADAPTER_DIR) on a base loaded fresh with "
    "AutoModelForCausalLM.from_pretrained(MODEL, dtype=DTYPE) (or AutoPeftModelForCausalLM.from_pretrained(ADAPTER_DIR))."
)
# The adapter_config.json fields that change what an adapter's tensors compute.
CONFIG_FIELDS = ("r", "lora_alpha", "use_rslora", "use_dora", "target_modules", "layers_to_transform",
                 "layers_pattern", "rank_pattern", "alpha_pattern", "modules_to_save")  # fmt: skip
# transformers marks every parameter its from_pretrained loaded; a copy.deepcopy of a model rebuilds its parameters
# without it (what a load leaves and a copy erases).
LOADED_MARK = "_is_hf_initialized"


def _trained_model(ns: dict) -> PeftModel:
    return need(ns, "model", PeftModel, where="the training cell (run it again)")


def _storage(model) -> set[int]:
    return {p.data_ptr() for _, p in parameters(model) if p.numel()}


def _configs(model) -> dict:
    """The tuner's own table of adapter configs by adapter name (PeftModel.peft_config is a property)."""
    for _, module in walk(model):
        configs = _fields(module).get("peft_config")
        if type(configs) is dict and configs:
            return configs
    return {}


def _adapter_name(model) -> str:
    """The adapter a check reads: "default" (what get_peft_model and from_pretrained name it), or the one adapter
    a reload named otherwise (PeftModel.from_pretrained(base, ADAPTER_DIR, adapter_name=...))."""
    names = list(_configs(model))
    return names[0] if len(names) == 1 else "default"


def _adapter(model) -> dict[str, torch.Tensor]:
    """The model's adapter as save_pretrained names its tensors, read from the modules' own tables (no method of
    the learner's object runs)."""
    marker = f".{_adapter_name(model)}."
    return {
        name.replace(marker, "."): p.detach()
        for name, p in parameters(model)
        if "lora_" in name and marker in name
    }


def _base(model) -> dict[str, torch.Tensor]:
    """The base model's own parameters under the LoRA wrapping, by name."""
    return {name: p for name, p in parameters(model) if "lora_" not in name}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    with torch._C.DisableTorchFunction():
        return a.shape == b.shape and torch.equal(a.detach().float().cpu(), b.detach().float().cpu())


def _lora_layers(model) -> dict[str, dict]:
    """Each LoRA layer's own state (the adapter's scaling, whether disabled or merged), by module name."""
    from peft.tuners.lora import LoraLayer

    name = _adapter_name(model)
    return {
        module_name: {
            "scaling": dict(_fields(m).get("scaling", {})).get(name),
            "disabled": bool(_fields(m).get("_disable_adapters", False)),
            "merged": list(_fields(m).get("merged_adapters", [])),
        }
        for module_name, m in walk(model)
        if isinstance(m, LoraLayer)
    }


def _config(model) -> dict:
    config = _configs(model).get(_adapter_name(model))
    return config.to_dict() if config is not None else {}


def _config_differences(saved: dict, loaded: dict) -> list[str]:
    def norm(field, value):
        return sorted(value) if field == "target_modules" and isinstance(value, (list, set, tuple)) else value

    return [
        f"{field}: {loaded.get(field)!r} loaded, {saved.get(field)!r} saved"
        for field in CONFIG_FIELDS
        if norm(field, saved.get(field)) != norm(field, loaded.get(field))
    ]


def _saved_adapter(ns: dict) -> tuple[Path, dict[str, torch.Tensor], dict]:
    """ADAPTER_DIR's adapter tensors and config as the lab saved them, read from the files."""
    from peft.utils import load_peft_weights

    adapter_dir = saved_adapter_dir(
        ns,
        RELOAD_RULE,
        "{adapter_dir} holds no saved adapter to reload.",
        "model.save_pretrained(ADAPTER_DIR) before reloading it.",
    )
    try:
        tensors = load_peft_weights(str(adapter_dir), device="cpu")
        config = read_adapter_config(adapter_dir)
    except Exception as err:  # noqa: BLE001 - safetensors' own SafetensorError too: a broken file is a verdict
        fail(
            RELOAD_RULE,
            f"{adapter_dir} holds no readable adapter ({type(err).__name__}: {error_text(err)[:200]}).",
            "model.save_pretrained(ADAPTER_DIR).",
        )
    return adapter_dir, {k: v for k, v in tensors.items() if "lora_" in k}, config


def _differing(one: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> list[str]:
    return sorted(set(one) ^ set(other)) or [k for k in one if not _same(one[k], other[k])]


def _measured_adapter() -> dict[str, str] | None:
    """The adapter of the model the locked cell example_logits measured ({saved tensor name: digest}, RECORDS in
    __init__.py); None where nothing was recorded (not graded, or a kernel restarted after a crash: its reason says
    so). A record the guard could not read fails closed."""
    from checks.evidence import locked_record

    value = locked_record("example_logits", "trained")
    if not isinstance(value, dict) or value.get("restarted"):
        return None
    if "unrecorded" in value or not isinstance(value.get("tensors"), dict):
        fail(
            RELOAD_RULE,
            f"the trained model could not be recorded after the locked cell example_logits "
            f"({str(value.get('unrecorded', 'no tensors'))[:200]}), so the saved adapter cannot be judged against it.",
            "keep `model` the PeftModel the training cell trained, and run the notebook top to bottom.",
        )
    return value["tensors"]


def reload_equal(ns: dict) -> None:
    """`reloaded` is the saved adapter on a fresh base, and that adapter is the trained model's: judged on the
    tensors themselves (the trained model's, the files', the reload's), read from the modules' own tables and from
    ADAPTER_DIR, so no method or hook of the learner's objects runs inside the check."""
    model = _trained_model(ns)
    reloaded = need(ns, "reloaded", (PeftModel, PreTrainedModel), where="the reload exercise cell")
    if not isinstance(reloaded, PeftModel):
        fail(
            RELOAD_RULE,
            f"`reloaded` is a plain {type(reloaded).__name__} without the adapter (or with it merged in).",
            "reloaded = PeftModel.from_pretrained(fresh_base, ADAPTER_DIR), on a freshly loaded base.",
        )
    if reloaded is model or _storage(reloaded) & _storage(model):
        fail(
            RELOAD_RULE,
            "`reloaded` shares its weights with the trained `model`, so comparing them proves nothing "
            "about what was saved.",
            "load a fresh base with AutoModelForCausalLM.from_pretrained(MODEL, dtype=DTYPE), then "
            "PeftModel.from_pretrained(fresh_base, ADAPTER_DIR).",
        )
    loaded = _adapter(reloaded)
    lora_b = [p for n, p in loaded.items() if "lora_B" in n]
    with torch._C.DisableTorchFunction():
        untrained = bool(lora_b) and not any(bool(torch.count_nonzero(p)) for p in lora_b)
    if untrained:
        fail(
            RELOAD_RULE,
            "`reloaded` carries a NEW, untrained adapter: every lora_B is zero, so it computes the bare base "
            "model. get_peft_model creates adapters; it does not load the saved one.",
            "reloaded = PeftModel.from_pretrained(fresh_base, ADAPTER_DIR) (or "
            "AutoPeftModelForCausalLM.from_pretrained(ADAPTER_DIR)).",
        )
    adapter_dir, saved, saved_config = _saved_adapter(ns)
    if differ := _differing(saved, _adapter(model)):
        fail(
            RELOAD_RULE,
            f"the adapter saved in {adapter_dir} is not the trained model's adapter as it is now (e.g. {differ[0]} "
            "differs): it was saved before training ended, changed before saving, or the model changed after. "
            "Its reload cannot give the trained model's outputs.",
            "save the trained model as it is, model.save_pretrained(ADAPTER_DIR), after training and only then "
            "reload it: PeftModel.from_pretrained(fresh_base, ADAPTER_DIR).",
        )
    measured = _measured_adapter()
    if measured is not None and (
        differ := sorted(set(saved) ^ set(measured))
        or [k for k in saved if tensor_digest(saved[k]) != measured[k]]
    ):
        fail(
            RELOAD_RULE,
            f"the adapter saved in {adapter_dir} is not the trained model's adapter as it is now (e.g. {differ[0]} "
            "differs from the model the locked cell example_logits measured): the model was changed or replaced "
            "after training. Its reload cannot give the trained model's outputs.",
            "save the trained model as it is, model.save_pretrained(ADAPTER_DIR), and leave `model` as the "
            "training cell left it.",
        )
    if differ := _differing(saved, loaded) or _config_differences(saved_config, _config(reloaded)):
        fail(
            RELOAD_RULE,
            f"the adapter inside `reloaded` is not the one saved in {adapter_dir} (e.g. {differ[0]} differs): "
            "this is not the saved adapter on the same base.",
            RELOAD_FIX,
        )
    base, trained_base = _base(reloaded), _base(model)
    if set(base) != set(trained_base) or any(base[n].shape != trained_base[n].shape for n in base):
        shown = sorted(set(base) ^ set(trained_base)) or ["the weights' shapes"]
        fail(
            RELOAD_RULE,
            f"`reloaded` is not the adapter on the course's base model (e.g. {shown[0]} differs from the trained "
            "model's).",
            "reload MODEL: " + RELOAD_FIX,
        )
    if other := sorted({str(p.dtype) for n, p in base.items() if p.dtype != trained_base[n].dtype}):
        fail(
            RELOAD_RULE,
            f"the base was loaded in another precision than the trained model's ({', '.join(other)} where the "
            f"trained model's base is {next(iter(trained_base.values())).dtype}): its outputs are not the trained "
            "model's.",
            RELOAD_FIX,
        )
    if changed := [n for n, p in base.items() if not _same(p, trained_base[n])]:
        fail(
            RELOAD_RULE,
            f"the base under `reloaded` is not a fresh copy of the course model (e.g. {changed[0]} differs from the "
            "trained model's frozen base): this is not the saved adapter on the same base.",
            RELOAD_FIX,
        )
    layers, trained_layers = _lora_layers(reloaded), _lora_layers(model)
    for name, state in layers.items():
        want = trained_layers.get(name, {}).get("scaling")
        if state["disabled"] or state["merged"] or state["scaling"] != want:
            fail(
                RELOAD_RULE,
                f"the LoRA layer {name} of `reloaded` does not compute what the trained model's does (adapter "
                f"{'disabled' if state['disabled'] else 'merged' if state['merged'] else 'scaled otherwise'}).",
                RELOAD_FIX,
            )
    trained_marks = any(LOADED_MARK in _fields(p) for p in trained_base.values())
    if trained_marks and not any(LOADED_MARK in _fields(p) for p in base.values()):
        fail(
            RELOAD_RULE,
            "`reloaded` was not loaded from the saved files: its base carries none of the marks transformers' "
            "from_pretrained leaves on what it loads (a copy of the trained model, e.g. copy.deepcopy(model), "
            "proves nothing about what was saved).",
            RELOAD_FIX,
        )


def _is_quantized(model) -> bool:
    return getattr(model.config, "quantization_config", None) is not None or bool(
        getattr(model, "is_quantized", False)
    )


def merged_outputs(ns: dict) -> None:
    """`merged` is a plain 16-bit model and DEPLOY_DIR holds a loadable, unquantized copy of it.

    Whether that copy is the trained adapter merged in is decided outside the kernel
    (files.deploy_matches_adapter), against the grader's own merge of ADAPTER_DIR."""
    _trained_model(ns)
    merged = need(ns, "merged", (PeftModel, PreTrainedModel), where="the deployment exercise cell")
    if isinstance(merged, PeftModel) or lora_wrapped(merged):
        fail(
            DEPLOY_RULE,
            "`merged` still carries LoRA layers: the adapter was not merged.",
            "merged = PeftModel.from_pretrained(base, ADAPTER_DIR).merge_and_unload().",
        )
    if _is_quantized(merged):
        fail(
            DEPLOY_RULE,
            "`merged` was merged into a quantized (4-bit or 8-bit) base, which re-quantizes the merged weights "
            "and loses precision.",
            "merge into a base loaded with dtype=torch.bfloat16 and no quantization_config.",
        )
    deploy_dir = Path(need(ns, "DEPLOY_DIR", (str, Path), where="the set-up cell"))
    config = deploy_dir / "config.json"
    if not config.exists():
        fail(DEPLOY_RULE, f"{deploy_dir} holds no saved model.", "merged.save_pretrained(DEPLOY_DIR).")
    if json.loads(config.read_text()).get("quantization_config"):
        fail(
            DEPLOY_RULE,
            f"the model saved in {deploy_dir} is quantized.",
            "save a merge made on a 16-bit base: merged.save_pretrained(DEPLOY_DIR).",
        )
    # Whether the copy computes what the trained adapter computes is decided outside the kernel, against
    # a merge the grader makes itself (files.deploy_matches_adapter): like with like, on any CPU.
