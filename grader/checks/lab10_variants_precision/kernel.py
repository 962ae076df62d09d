"""Hidden checks for lab 10 (LoRA's variants and precision), inside the learner's kernel.

Each applies or calls what the learner wrote on real models (every config on a fresh base, the memory rule on
cases the lab never shows and on a model after a real AdamW step, one GradScaler step on fp16_model, both
merges recomputed here), turns what it saw into plain data (checks.evidence) and judges it with judges.py,
in the kernel and again outside it. A choice is judged against the learner's own measurements, so it holds on
every machine.
"""

from __future__ import annotations

import copy

import numpy
import torch

from checks import error_text, fail, need
from checks.evidence import RECORDERS, publish, recorded
from checks.inspect_model import CONFIG_FIELDS, active_config, leaf, lora_names, manifest, peft_model_or_fail
from checks.lab10_variants_precision import judges


def _base(ns: dict, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(need(ns, "MODEL", str, where="the set-up cell"), dtype=dtype)


def _fields(config) -> dict:
    """What config_as_asked reads of a LoraConfig."""
    return {k: config.to_dict()[k] for k in CONFIG_FIELDS}


def _variant_state(ns: dict, config) -> dict:
    from peft.tuners.lora import LoraLayer

    fresh = _base(ns)
    original = {n: p.detach().clone() for n, p in fresh.named_parameters() if n.endswith("q_proj.weight")}
    model = peft_model_or_fail(fresh, copy.deepcopy(config), "course's Llama", judges.TARGETS_FIX)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    first = layers[0][1] if layers else None
    base_now = {
        n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in model.named_parameters()
    }
    return {
        "leaves": sorted({n.rsplit(".", 1)[-1] for n, _ in layers}),
        "r": config.r,
        "alpha": config.lora_alpha,
        "config": _fields(config),
        "scaling": float(first.scaling["default"]) if first else 0.0,
        "dora": any(len(getattr(m, "lora_magnitude_vector", {}) or {}) for _, m in layers),
        "b_zero": all(not m.lora_B["default"].weight.any() for _, m in layers if "default" in m.lora_B),
        "base_changed": any(not torch.equal(base_now[n], w) for n, w in original.items() if n in base_now),
    }


def variants_applied(ns: dict) -> None:
    """Every config of `variants` applied to a fresh fp32 base: what it wraps, scales, adds and changes."""
    from peft import LoraConfig

    variants = need(ns, "variants", dict, where="the exercise cell")
    record = {"variants": {}}
    for name, config in variants.items():
        if not isinstance(config, LoraConfig):
            fail(
                judges.VARIANTS_RULE,
                f"variants[{name!r}] is a {type(config).__name__}.",
                "a LoraConfig each.",
            )
        record["variants"][str(name)] = _variant_state(ns, config)
    judges.lora_variants(publish("lora_variants", record))


def choice(ns: dict) -> None:
    """chosen_variant is the lowest mean loss the comparison cell measured, and lead_is_real says whether its
    lead beats the seeds' spread (as the cell measured them, where grading recorded it:
    checks.evidence.recorded)."""
    results = need(ns, "results", dict, where="the comparison cell")
    chosen = need(ns, "chosen_variant", where="the exercise cell")
    lead = need(ns, "lead_is_real", where="the exercise cell")
    seed_losses = recorded("compare", "seed_losses") or RECORDERS["seed_losses"](results)
    # bool, numpy's bool and a one-element torch bool tensor (exact types: no subclass's method runs) are answers;
    # anything else is shown as its type's name, never asked for its truth
    if type(lead) in (bool, numpy.bool_):
        answer = bool(lead)
    elif type(lead) is torch.Tensor and lead.dtype == torch.bool and lead.numel() == 1:
        answer = bool(lead.item())
    else:
        answer = type(lead).__name__
    record = {"seed_losses": seed_losses, "chosen": str(chosen), "lead_is_real": answer}
    judges.variant_choice(publish("variant_choice", record))


# Cases the lab never shows: (total, trainable, weight_bytes) -> the bytes the rule counts.
MEMORY_CASES = [(8_043_892_736, 13_631_488, 2), (8_043_892_736, 13_631_488, 0.5), (1_000, 10, 4)]


def _rule(total, trainable, weight_bytes) -> dict:
    return {
        "weights": int(round((total - trainable) * weight_bytes)) + trainable * 4,
        "gradients": trainable * 4,
        "optimizer": trainable * 8,
    }


def _measured_model(ns: dict):
    """A bf16 base with the lab's LoRA on every linear layer: the model whose training memory is measured."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        _base(ns, torch.bfloat16), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")
    )


def _held_after_one_step(model) -> tuple[int, dict]:
    """One AdamW step on `model`: the bytes of its weights, gradients and AdamW's moments."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    ids = torch.arange(2, 18).unsqueeze(0)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    gradients = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    moments = sum(
        t.numel() * t.element_size()
        for state in optimizer.state.values()
        for key, t in state.items()
        if key in ("exp_avg", "exp_avg_sq")
    )
    return weights + gradients + moments, {"weights": weights, "gradients": gradients, "optimizer": moments}


def memory(ns: dict) -> None:
    """training_bytes on hidden cases, and against what a real AdamW step holds."""
    function = need(ns, "training_bytes", where="the exercise cell")
    cases = []
    # The learner's function runs before the expected bytes exist: no frame it could read holds them.
    for args in MEMORY_CASES:
        case = {"args": list(args)}
        try:
            got = function(*args)
            case["got"] = {k: int(round(float(v))) for k, v in dict(got).items()}
        except Exception as err:  # noqa: BLE001 - the learner's function failing is a verdict too
            case["got"], case["error"] = {}, f"{type(err).__name__}: {error_text(err)[:120]}"
        cases.append(case | {"want": _rule(*args)})
    model = _measured_model(ns)
    args = (
        sum(p.numel() for p in model.parameters()),
        sum(p.numel() for p in model.parameters() if p.requires_grad),
        2,
    )
    try:
        predicted = sum(int(round(float(v))) for v in dict(function(*args)).values())
    except Exception:  # noqa: BLE001 - reported by the cases above
        predicted = None
    held, parts = _held_after_one_step(model)
    record = {"cases": cases, "measured": held, "parts": parts, "predicted": predicted}
    judges.memory_formula(publish("memory_formula", record))


def fp16(ns: dict) -> None:
    """fp16_model's dtypes, and one fp16-autocast step with a GradScaler, as Trainer(fp16=True) takes it."""
    from peft import PeftModel

    model = need(ns, "fp16_model", PeftModel, where="the exercise cell")
    trainable = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad})
    frozen = sorted(
        {
            str(p.dtype).removeprefix("torch.")
            for p in model.parameters()
            if not p.requires_grad and p.is_floating_point()
        }
    )
    seen = manifest(model)
    record = {
        "trainable_dtypes": trainable,
        "frozen_dtypes": frozen,
        "step_error": "",
        "leaves": sorted({leaf(n) for n in lora_names(seen)}),
        "config": {k: active_config(seen).get(k) for k in CONFIG_FIELDS},
    }
    try:
        step = copy.deepcopy(model)
        optimizer = torch.optim.SGD([p for p in step.parameters() if p.requires_grad], lr=1e-3)
        device = step.device.type
        scaler = torch.amp.GradScaler(device)
        ids = torch.arange(2, 18).unsqueeze(0).to(step.device)
        with torch.autocast(device, dtype=torch.float16):
            loss = step(input_ids=ids, labels=ids).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        scaler.step(optimizer)
    except Exception as err:  # noqa: BLE001 - the step failing is the verdict
        record["step_error"] = f"{type(err).__name__}: {error_text(err)[:150]}"
    judges.fp16_ready(publish("fp16_ready", record))


def merge_gaps_of(model_id: str, adapter_dir, probe, nf4: bool) -> float:
    """max |logits(merged) - logits(the adapter unmerged on an fp32 base)| on the probe."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    def logits(model):
        model.eval()
        with torch.no_grad():
            return model(input_ids=probe).logits.float()

    reference = logits(
        PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.float32), adapter_dir
        )
    )
    if nf4:
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        base = AutoModelForCausalLM.from_pretrained(
            model_id, quantization_config=config, dtype=torch.bfloat16
        )
    else:
        base = AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.bfloat16)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    return (logits(merged) - reference).abs().max().item()


def merge(ns: dict) -> None:
    """merge_gaps against both merges measured here, and the deployment route chosen."""
    import warnings
    from pathlib import Path

    gaps = need(ns, "merge_gaps", dict, where="the exercise cell")
    adapter_dir = Path(need(ns, "ADAPTER_DIR", (str, Path), where="the set-up cell"))
    probe = need(ns, "probe", torch.Tensor, where="the set-up cell")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft warns that merging into 4-bit rounds: that is what is measured
        want = {
            route: merge_gaps_of(ns["MODEL"], adapter_dir, probe, route == "nf4") for route in ("bf16", "nf4")
        }
    got = {}
    for route in ("bf16", "nf4"):
        try:
            got[route] = float(gaps.get(route))
        except (TypeError, ValueError):
            got[route] = repr(gaps.get(route))[:40]
    record = {"got": got, "want": want, "deploy_from": str(ns.get("deploy_from"))}
    judges.merge_fidelity(publish("merge_fidelity", record))
