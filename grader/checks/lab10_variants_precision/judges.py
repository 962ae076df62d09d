"""Lab 10's judges: the variants on one budget, the choice, training memory, fp16 readiness and the merge's
fidelity, each from its record; the lab's rule titles.
"""

from __future__ import annotations

from checks import fail
from checks.inspect_model import config_as_asked
from labutils.facts import LLAMA_ATTENTION, LLAMA_NAMES

VARIANTS_RULE = "Compare LoRA's variants on one budget: the same rank, alpha, steps and data for each"


CHOICE_RULE = "Choose a variant by what you measured, not by what it is called"


TIE_RULE = "Compare variants over seeds: a gap smaller than the seeds' spread is a tie, not a win"


# Two means or gaps of the same measurements, summed in another order, differ by far less than this.
SAME_NUMBER = 1e-9


MEMORY_RULE = "Training memory: frozen weights at their dtype, fp32 adapter weights, their gradients and AdamW's two states"


FP16_RULE = "fp16 mixed precision: the trainable adapter in fp32 (GradScaler refuses fp16 gradients), the base in fp16"


MERGE_RULE = (
    "Merge for deployment into a 16-bit base: merging into a 4-bit base re-quantizes and loses fidelity"
)


VARIANT_NAMES = ("attention", "all_linear", "rslora", "dora", "pissa")
TARGETS_FIX = (
    "target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj'] for attention only, target_modules='all-linear' for "
    "every other variant."
)


SCALING_RTOL = 1e-6


def lora_variants(record: dict) -> None:
    """Each named variant, applied to a fresh base, is what its name says, all on one rank and alpha. A variant of
    the learner's own beside the five (rsLoRA with dropout, say) shares the budget and the targets; its method is
    its own, so only the five names are held to theirs."""
    missing = [n for n in VARIANT_NAMES if n not in record["variants"]]
    if missing:
        fail(
            VARIANTS_RULE, f"`variants` has no {missing}.", f"one LoraConfig per name: {list(VARIANT_NAMES)}."
        )
    got = record["variants"]
    budgets = {(v["r"], v["alpha"]) for v in got.values()}
    if len(budgets) > 1:
        shown = ", ".join(f"{n} r={v['r']}/alpha={v['alpha']}" for n, v in got.items())
        fail(
            VARIANTS_RULE,
            f"the variants do not share one rank and alpha ({shown}): a bigger adapter wins by size, so the "
            "comparison no longer says which variant is better.",
            "r=8, lora_alpha=16 for every variant.",
        )
    for name, v in got.items():
        config_as_asked(v["config"], f"variants[{name!r}]", 8, 16, "CAUSAL_LM")
    for name, v in got.items():
        want = set(LLAMA_ATTENTION) if name == "attention" else set(LLAMA_NAMES)
        if set(v["leaves"]) != want:
            fail(
                VARIANTS_RULE if name == "attention" else 1,
                f"variant {name!r} wraps {v['leaves']}, not {sorted(want)}.",
                TARGETS_FIX,
            )
        if name not in VARIANT_NAMES:
            continue
        rs = name == "rslora"
        want_scaling = v["alpha"] / (v["r"] ** 0.5 if rs else v["r"])
        if abs(v["scaling"] - want_scaling) > SCALING_RTOL * want_scaling:
            fail(
                VARIANTS_RULE,
                f"variant {name!r} scales its update by {v['scaling']:.3f}, not alpha/{'sqrt(r)' if rs else 'r'} "
                f"= {want_scaling:.3f}.",
                "use_rslora=True for rslora only (alpha/sqrt(r)); plain alpha/r for the others.",
            )
        if v["dora"] != (name == "dora"):
            fail(
                VARIANTS_RULE,
                f"variant {name!r} {'has' if v['dora'] else 'has no'} DoRA magnitude vectors.",
                "use_dora=True for dora only.",
            )
        pissa = name == "pissa"
        if pissa and (v["b_zero"] or not v["base_changed"]):
            fail(
                VARIANTS_RULE,
                "variant 'pissa' starts like plain LoRA (B = 0, base weights untouched): PiSSA puts the weight's "
                "principal singular directions into A and B and leaves the base the residual.",
                "init_lora_weights='pissa' (or 'pissa_niter_4', a fast SVD).",
            )
        if not pissa and (not v["b_zero"] or v["base_changed"]):
            fail(
                VARIANTS_RULE,
                f"variant {name!r} does not start from the base model (B is not zero, or the base changed): "
                "the comparison no longer starts from one point.",
                "the default init_lora_weights=True for every variant but pissa.",
            )


def variant_choice(record: dict) -> None:
    """chosen_variant has the lowest mean loss over the seeds the comparison cell ran, and lead_is_real says
    whether its gap to the runner-up is larger than the spread (highest minus lowest) of both."""
    runs = record["seed_losses"]
    if not runs:
        fail(CHOICE_RULE, "`results` holds no measured variant.", "run the comparison cell first.")
    means = {name: sum(losses) / len(losses) for name, losses in runs.items()}
    spreads = {name: max(losses) - min(losses) for name, losses in runs.items()}
    best = min(means, key=means.get)
    chosen = record["chosen"]
    # Means summed in another order may differ in their last bits: within the tolerance, either is the lowest.
    if chosen not in means or means[chosen] > means[best] + SAME_NUMBER:
        shown = ", ".join(f"{n} {loss:.3f}" for n, loss in sorted(means.items(), key=lambda kv: kv[1]))
        fail(
            CHOICE_RULE,
            f"chosen_variant is {chosen!r}, but your own measurement puts {best!r} lowest "
            f"(mean final loss over the seeds: {shown}).",
            "chosen_variant = min(results, key=lambda name: results[name]['loss']).",
        )
    answer = record["lead_is_real"]
    if type(answer) is not bool:
        fail(TIE_RULE, f"lead_is_real is a {answer}, not True or False.", "lead_is_real = gap > spread.")
    others = {name: mean for name, mean in means.items() if name != chosen}
    if not others:
        return
    runner_up = min(others, key=others.get)
    gap = means[runner_up] - means[chosen]
    spread = max(spreads[chosen], spreads[runner_up])
    if abs(gap - spread) <= SAME_NUMBER or answer == (gap > spread):
        return
    measured = (
        f"{chosen!r} leads {runner_up!r} by {gap:.3f} in mean loss, and the seeds' spread of the two is "
        f"{spread:.3f}"
    )
    if answer:
        fail(
            TIE_RULE,
            f"lead_is_real is True, but {measured}: the gap is inside the noise, a tie that another seed could "
            "reverse.",
            "lead_is_real = gap > max(spread of the best, spread of the runner-up).",
        )
    fail(
        TIE_RULE,
        f"lead_is_real is False, but {measured}: the gap is larger than the noise, a real lead on these seeds.",
        "lead_is_real = gap > max(spread of the best, spread of the runner-up).",
    )


def memory_formula(record: dict) -> None:
    """training_bytes gives, for each case, exactly the bytes the rule counts."""
    for case in record["cases"]:
        if case.get("error"):
            fail(
                MEMORY_RULE,
                f"training_bytes{case['args']} raised {case['error']}.",
                "return a dict of three ints.",
            )
        for part in ("weights", "gradients", "optimizer"):
            if case["got"].get(part) != case["want"][part]:
                fail(
                    MEMORY_RULE,
                    f"training_bytes{tuple(case['args'])} gives {part} = {case['got'].get(part)!r}, "
                    f"expected {case['want'][part]:,}. {_MEMORY_HINT[part]}",
                    "weights = frozen x weight_bytes + trainable x 4; gradients = trainable x 4; "
                    "optimizer = trainable x 8.",
                )
    if record["measured"] != record["predicted"]:
        fail(
            MEMORY_RULE,
            f"on the lab's model after one AdamW step, {record['measured']} bytes are held, and training_bytes "
            f"predicts {record['predicted']}.",
            "count exactly what the optimizer step keeps: weights, gradients of trainable parameters, AdamW's "
            "exp_avg and exp_avg_sq.",
        )


_MEMORY_HINT = {
    "weights": "Frozen weights stay at the base's dtype; peft keeps the adapter's own weights in fp32.",
    "gradients": "Only trainable parameters get gradients (fp32, as the adapter's weights): the frozen base "
    "gets none.",
    "optimizer": "AdamW keeps two fp32 states per trainable parameter (exp_avg and exp_avg_sq).",
}


def fp16_ready(record: dict) -> None:
    """fp16_model is the all-linear adapter asked for (r=8, alpha=16) and trains under GradScaler: trainable in
    fp32, frozen floating weights in fp16."""
    if record["leaves"] != sorted(LLAMA_NAMES):
        fail(
            1,
            f"fp16_model's LoRA wraps {record['leaves'] or 'nothing'}, not every linear layer "
            f"({sorted(LLAMA_NAMES)}).",
            "LoraConfig(r=8, lora_alpha=16, target_modules='all-linear').",
        )
    config_as_asked(record["config"], "fp16_model", 8, 16)
    if record["trainable_dtypes"] != ["float32"]:
        fail(
            FP16_RULE,
            f"the trainable parameters are {record['trainable_dtypes']}: GradScaler.unscale_ raises "
            "'Attempting to unscale FP16 gradients' for fp16 ones, and bf16 adapters under fp16 autocast "
            "round every update.",
            "get_peft_model's default autocast_adapter_dtype=True, or peft's "
            "cast_mixed_precision_params(model, dtype=torch.float16) after wrapping.",
        )
    if record["frozen_dtypes"] != ["float16"]:
        fail(
            FP16_RULE,
            f"the frozen weights are {record['frozen_dtypes']}: casting the whole model to fp32 doubles its "
            "memory and leaves nothing for mixed precision to save.",
            "keep the base in fp16 and only the adapter in fp32.",
        )
    if record["step_error"]:
        fail(
            FP16_RULE, f"one GradScaler step failed: {record['step_error']}.", "trainable parameters in fp32."
        )


MERGE_FACTOR = (
    3.0  # the learner's gaps against the grader's: within this factor (CPUs round bf16 differently)
)


def merge_fidelity(record: dict) -> None:
    """merge_gaps are the logit gaps the grader measures (within a factor), and deploy_from is 16-bit."""
    got, want = record["got"], record["want"]
    for route in ("bf16", "nf4"):
        value = got.get(route)
        if not isinstance(value, (int, float)) or value <= 0:
            fail(
                MERGE_RULE,
                f"merge_gaps[{route!r}] is {value!r}: a merged model's logits always differ a little from the "
                "unmerged adapter's (rounding), so a gap of 0 means the comparison was not made.",
                "compare the merged model's logits with the unmerged adapter model's, on the same probe.",
            )
        if not want[route] / MERGE_FACTOR <= value <= want[route] * MERGE_FACTOR:
            fail(
                MERGE_RULE,
                f"merge_gaps[{route!r}] = {value:.3g}, where merging into that base measures {want[route]:.3g} "
                "here.",
                "the gap is max |logits(merged) - logits(unmerged, fp32 base)| on the probe.",
            )
    if record["deploy_from"] != "bf16":
        fail(
            MERGE_RULE,
            f"deploy_from is {record['deploy_from']!r}, yet merging into NF4 is {want['nf4'] / want['bf16']:.0f}x "
            "further from the trained model than merging into bf16.",
            "deploy_from = 'bf16': merge on a 16-bit base, quantize the merged copy afterwards if needed.",
        )
