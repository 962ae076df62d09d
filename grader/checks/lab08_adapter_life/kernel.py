"""Hidden checks for lab 08 (the adapter's life after training).

Each check reads the learner's real objects (which adapters a model carries, which one is active, which
parameters train, what the adapters' weights are against the saved files), turns them into a record of plain
data (checks.evidence) and judges it with judges.py, in the kernel and again outside it. Nothing is read
from printed output.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import torch
from peft import PeftModel

from checks import error_text, fail, need
from checks.evidence import publish
from checks.inspect_model import _fields, walk
from checks.lab08_adapter_life import judges

BLEND_WEIGHTS = {"instruct": 0.7, "concise": 0.3}  # exercise 5's blend
_ADAPTER_SEGMENT = re.compile(r"\.lora_(A|B|embedding_A|embedding_B)\.[^.]+\.weight$")


def _saved(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "adapter_model.safetensors"))


def _lora_params(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if "lora_" in n]


def resume_trainable(ns: dict) -> None:
    """`resumed` is the saved adapter, trainable (and only it), and the training cell moved it."""
    resumed = need(ns, "resumed", PeftModel, where="the resume exercise cell")
    saved = _saved(need(ns, "ADAPTER_DIR", (str, Path), where="the set-up cell"))
    lora = _lora_params(resumed)
    trainable = [(n, p) for n, p in lora if p.requires_grad]
    # the trainable LoRA weights under the names the saved file uses (without the adapter's name)
    as_saved = {_ADAPTER_SEGMENT.sub(lambda m: f".lora_{m.group(1)}.weight", n): p for n, p in trainable}
    matched = [k for k in as_saved if k in saved]
    drift = None
    if matched:
        gap = sum(
            (as_saved[k].detach().float().cpu() - saved[k].float()).pow(2).sum().item() for k in matched
        )
        size = sum(saved[k].float().pow(2).sum().item() for k in matched)
        drift = (gap / size) ** 0.5 if size else None
    moved = any(not torch.equal(as_saved[k].detach().float().cpu(), saved[k].float()) for k in matched)
    record = {
        "adapters": sorted(resumed.peft_config),
        "lora_params": sum(p.numel() for _, p in lora),
        "lora_trainable": sum(p.numel() for _, p in trainable),
        "other_trainable": sum(p.numel() for n, p in resumed.named_parameters() if p.requires_grad)
        - sum(p.numel() for _, p in trainable),
        "saved_tensors": len(saved),
        "matched": len(matched),
        "drift": drift,
        "moved": moved,
    }
    judges.resumed_adapter(publish("resumed_adapter", record))


def _other_checkpoint(model_id: str, dtype) -> torch.nn.Module:
    """The base's name and shapes with other weights, as another revision of it would have."""
    from transformers import AutoModelForCausalLM

    other = AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype, device_map="auto")
    generator = torch.Generator().manual_seed(2026)
    with torch.no_grad():
        for weight in other.parameters():
            noise = torch.randn(weight.shape, generator=generator).to(weight.device, weight.dtype)
            weight.add_(noise * weight.float().std().to(weight.dtype))
    return other


def _verdict(function, base, adapter_dir) -> dict:
    try:
        problems = function(base, adapter_dir)
    except Exception as err:  # noqa: BLE001 - the learner's function failing is a verdict too
        return {"verdict": "error", "detail": f"{type(err).__name__}: {error_text(err)[:200]}"}
    if isinstance(problems, (list, tuple, set)):
        return {"verdict": "flagged" if problems else "belongs", "detail": str(list(problems))[:300]}
    return {"verdict": "not a list", "detail": f"returned a {type(problems).__name__}: {str(problems)[:100]}"}


def adapter_matches_base(ns: dict) -> None:
    """adapter_problems finds nothing on the adapter's own base, and flags a base of another name (same
    weights) and another checkpoint of the same name and shapes."""
    from transformers import AutoModelForCausalLM

    function = need(ns, "adapter_problems", where="the exercise cell")
    if not callable(function):
        fail(
            judges.BASE_RULE,
            "`adapter_problems` is not a function.",
            "def adapter_problems(base, adapter_dir): ...",
        )
    model_id = need(ns, "MODEL", str, where="the set-up cell")
    adapter_dir = need(ns, "ADAPTER_DIR", (str, Path), where="the set-up cell")
    dtype = ns.get("DTYPE", torch.bfloat16)

    def fresh():
        return AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype, device_map="auto")

    renamed = fresh()  # what loading another model id would record, wherever one reads the name
    renamed.config._name_or_path = renamed.name_or_path = "another-org/another-model"
    cases = [
        ("own base", fresh()),
        ("own base", fresh()),
        ("another checkpoint, same name", _other_checkpoint(model_id, dtype)),
        ("same weights, another name", renamed),
    ]
    # In an order nobody can know in advance, the own base twice: a function that answers by how often it was
    # called (the lab's own calls come first) instead of by the base it is given cannot tell which call is which.
    random.SystemRandom().shuffle(cases)
    record = {}
    for case, base in cases:
        verdict = _verdict(function, base, adapter_dir)
        if case in record and record[case]["verdict"] != verdict["verdict"]:
            verdict = {
                "verdict": "inconsistent",
                "detail": f"{record[case]['verdict']}, then {verdict['verdict']}",
            }
        if record.get(case, {}).get("verdict") != "inconsistent":
            record[case] = verdict
    judges.base_match(publish("base_match", dict(sorted(record.items()))))


def _matches_saved(model, name: str, folder) -> float | None:
    """The largest difference between adapter `name`'s weights and the ones saved in `folder`."""
    from peft import get_peft_model_state_dict

    if name not in model.peft_config:
        return None
    live, saved = get_peft_model_state_dict(model, adapter_name=name), _saved(folder)
    if set(live) != set(saved):
        return None
    return max((live[k].detach().float().cpu() - saved[k].float()).abs().max().item() for k in saved)


def _status(model) -> dict:
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    merged = sorted({a for m in layers for a in getattr(m, "merged_adapters", [])})
    enabled = {not getattr(m, "disable_adapters", False) for m in layers}
    return {
        "adapters": sorted(getattr(model, "peft_config", {})),
        "active": list(getattr(model, "active_adapters", []) or []) if layers else [],
        "layers": len(layers),
        "merged": merged,
        "enabled": enabled == {True},
    }


def multi_adapters(ns: dict) -> None:
    """`multi` carries the saved instruct and concise adapters, concise active, nothing merged."""
    multi = need(ns, "multi", PeftModel, where="the exercise cell")
    record = _status(multi) | {
        "instruct_vs_saved": _matches_saved(multi, "instruct", ns["ADAPTER_DIR"]),
        "concise_vs_saved": _matches_saved(multi, "concise", ns["SECOND_DIR"]),
    }
    judges.adapter_set(publish("adapter_set", record))


def base_only(ns: dict) -> None:
    """`base_only_logits` are the bare base's logits on the probe, and `multi` still has its adapters."""
    from transformers import AutoModelForCausalLM

    got = need(ns, "base_only_logits", torch.Tensor, where="the exercise cell")
    multi = need(ns, "multi", PeftModel, where="exercise 3")
    probe = need(ns, "probe", where="the set-up cell")
    bare = AutoModelForCausalLM.from_pretrained(
        ns["MODEL"], dtype=ns.get("DTYPE", torch.bfloat16), device_map="auto"
    ).eval()
    with torch.no_grad():
        expected = bare(**probe.to(bare.device)).logits.float().cpu()
    # The learner's tensor read with torch's own methods only: a subclass's __torch_function__ would run its
    # code inside this check (answering zeros to the subtraction below).
    with torch._C.DisableTorchFunctionSubclass():
        got = torch.Tensor.detach(got).float().cpu()
    if type(got) is not torch.Tensor:
        fail(
            judges.BASE_ONLY_RULE,
            f"base_only_logits is a {type(got).__name__}, not the logits tensor the model returned.",
            "with multi.disable_adapter(): base_only_logits = logits_of(multi).",
        )
    record = _status(multi) | {"shape_ok": tuple(got.shape) == tuple(expected.shape), "max_diff": None}
    if record["shape_ok"]:
        record["max_diff"] = (got - expected).abs().max().item()
        record["scale"] = expected.abs().max().item()
    judges.base_only_outputs(publish("base_only_outputs", record))


def _update_error(model, name: str, weights: dict[str, float]) -> float | None:
    """How far adapter `name`'s update is from the weighted sum of the others' (relative, every layer)."""
    from peft.tuners.lora import LoraLayer

    gap = total = 0.0
    seen = False
    for _, module in walk(model):
        if not issubclass(type(module), LoraLayer):
            continue
        fields = _fields(module)
        if SHADOWED.intersection(
            fields
        ):  # peft's method or tables replaced on this instance: not peft's update
            return float("inf")
        lora_a = dict.get(dict.get(fields, "_modules", {}), "lora_A")
        if lora_a is None or name not in lora_a or not all(a in lora_a for a in weights):
            continue
        seen = True
        delta = type(module).get_delta_weight  # the class's method, which the guard keeps as peft wrote it
        with torch.no_grad():
            wanted = sum(w * delta(module, a).float() for a, w in weights.items())
            gap += (delta(module, name).float() - wanted).pow(2).sum().item()
            total += wanted.pow(2).sum().item()
    return (gap / total) ** 0.5 if seen and total else None


# What peft's get_delta_weight reads, which an attribute stored on the layer itself would shadow.
SHADOWED = {"get_delta_weight", "lora_A", "lora_B"}


def blend(ns: dict) -> None:
    """`multi` has an active adapter "blend" whose update is 0.7 instruct + 0.3 concise, in every layer."""
    multi = need(ns, "multi", PeftModel, where="exercise 3")
    record = _status(multi) | {"error": None, "swapped_error": None, "rank": None}
    if "blend" in multi.peft_config:
        record["error"] = _update_error(multi, "blend", BLEND_WEIGHTS)
        record["swapped_error"] = _update_error(multi, "blend", {"instruct": 0.3, "concise": 0.7})
        record["rank"] = multi.peft_config["blend"].r
    judges.weighted_blend(publish("weighted_blend", record))
