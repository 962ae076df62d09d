"""Lab 10's checks (grader/checks/lab10_variants_precision/): the judges on hand-made records, and the records made from
real models for the memory rule and fp16 training (the graded catalogue proves them end to end)."""

from __future__ import annotations

import pytest


@pytest.fixture
def judges(hidden_check):
    return hidden_check("lab10_variants_precision.judges")


ALL = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
PLAIN = {
    "leaves": ALL,
    "r": 8,
    "alpha": 16,
    "scaling": 2.0,
    "dora": False,
    "b_zero": True,
    "base_changed": False,
    "config": {"r": 8, "lora_alpha": 16, "rank_pattern": {}, "alpha_pattern": {}, "task_type": "CAUSAL_LM"},
}
VARIANTS = {
    "attention": PLAIN | {"leaves": ["k_proj", "o_proj", "q_proj", "v_proj"]},
    "all_linear": PLAIN,
    "rslora": PLAIN | {"scaling": 16 / 8**0.5},
    "dora": PLAIN | {"dora": True},
    "pissa": PLAIN | {"b_zero": False, "base_changed": True},
}


@pytest.mark.parametrize(
    ("name", "change", "words"),
    [
        ("rslora", {"scaling": 2.0}, "alpha/sqrt"),
        ("all_linear", {"scaling": 16 / 8**0.5}, "alpha/r"),
        ("dora", {"dora": False}, "has no DoRA"),
        ("pissa", {"b_zero": True, "base_changed": False}, "starts like plain LoRA"),
        ("dora", {"r": 16, "alpha": 32}, "one rank and alpha"),
        ("attention", {"leaves": ALL}, "wraps"),
        ("all_linear", {"leaves": ["q_proj", "v_proj"]}, "Mistake 1"),
        ("attention", {"dora": True}, "'attention' has DoRA magnitude vectors"),
        ("all_linear", {"b_zero": False}, "'all_linear' does not start from the base model"),
        ("rslora", {"base_changed": True}, "'rslora' does not start from the base model"),
        ("pissa", {"b_zero": True}, "starts like plain LoRA"),
        ("dora", {"config": PLAIN["config"] | {"task_type": None}}, "task_type=None"),
        ("all_linear", {"config": PLAIN["config"] | {"alpha_pattern": {"q_proj": 64}}}, "alpha_pattern"),
    ],
)
def test_variants_judge_names_what_a_config_really_is(judges, name, change, words):
    judges.lora_variants({"variants": VARIANTS})
    with pytest.raises(AssertionError, match=words):
        judges.lora_variants({"variants": VARIANTS | {name: VARIANTS[name] | change}})
    with pytest.raises(AssertionError, match="has no"):
        judges.lora_variants({"variants": {k: v for k, v in VARIANTS.items() if k != "pissa"}})


def test_a_variant_of_the_learners_own_keeps_the_budget_and_targets_and_its_own_method(judges):
    own = VARIANTS | {"rslora_dropout": VARIANTS["rslora"], "dora_pissa": VARIANTS["pissa"] | {"dora": True}}
    judges.lora_variants({"variants": own})
    with pytest.raises(AssertionError, match="one rank and alpha"):
        judges.lora_variants({"variants": own | {"rslora_16": VARIANTS["rslora"] | {"r": 16, "alpha": 32}}})
    with pytest.raises(AssertionError, match="Mistake 1"):
        judges.lora_variants(
            {"variants": own | {"rslora_qv": VARIANTS["rslora"] | {"leaves": ["q_proj", "v_proj"]}}}
        )


# Final losses per seed: rslora leads dora by 0.4 in mean with a spread of 0.2 (a real lead); dora leads
# all_linear by 0.05 with a spread of 0.1 (a tie).
RUNS = {"attention": [8.9, 9.0, 8.8], "rslora": [8.0, 8.1, 7.9], "dora": [8.4, 8.5, 8.3]}


def choice(runs, chosen, lead):
    return {"seed_losses": runs, "chosen": chosen, "lead_is_real": lead}


def test_choice_judge_follows_the_learners_own_numbers(judges):
    judges.variant_choice(choice(RUNS, "rslora", True))
    faster_dora = RUNS | {"dora": [7.6, 7.7, 7.5]}  # another machine's ranking
    judges.variant_choice(choice(faster_dora, "dora", True))
    with pytest.raises(AssertionError, match="puts 'rslora' lowest"):
        judges.variant_choice(choice(RUNS, "attention", True))


def test_a_gap_inside_the_seeds_spread_is_a_tie(judges):
    tied = {"all_linear": [8.05, 8.1, 8.0], "dora": [8.0, 8.05, 7.95], "attention": [9.0, 9.0, 9.0]}
    judges.variant_choice(choice(tied, "dora", False))
    with pytest.raises(AssertionError, match=r"\[Compare variants over seeds.*inside the noise, a tie"):
        judges.variant_choice(choice(tied, "dora", True))
    with pytest.raises(AssertionError, match="larger than the noise, a real lead"):
        judges.variant_choice(choice(RUNS, "rslora", False))
    with pytest.raises(AssertionError, match="is a int, not True or False"):
        judges.variant_choice(choice(RUNS, "rslora", "int"))  # the kernel records a type's name


def test_numbers_summed_in_another_order_give_the_same_verdict(judges):
    # the learner's mean (8.0 + 8.1 + 7.9) / 3 and the judge's agree only to the last bits: either name is
    # the lowest, and a gap equal to the spread is either answer
    twins = {"a": [8.0, 8.1, 7.9], "b": [7.9, 8.1, 8.0]}
    judges.variant_choice(choice(twins, "a", False))
    judges.variant_choice(choice(twins, "b", False))
    edge = {"a": [1.0, 1.2, 1.1], "b": [1.3, 1.3, 1.3]}  # gap 0.2 == spread 0.2
    judges.variant_choice(choice(edge, "a", True))
    judges.variant_choice(choice(edge, "a", False))


def test_fp16_and_merge_judges(judges):
    good = {"trainable_dtypes": ["float32"], "frozen_dtypes": ["float16"], "step_error": "", "leaves": ALL}
    good["config"] = PLAIN["config"] | {"task_type": None}  # the exercise asks for no task type
    judges.fp16_ready(good)
    with pytest.raises(AssertionError, match="Mistake 1.*wraps \\['q_proj', 'v_proj'\\]"):
        judges.fp16_ready(good | {"leaves": ["q_proj", "v_proj"]})  # no target_modules: peft's Llama default
    with pytest.raises(AssertionError, match="Mistake 2.*r=16, lora_alpha=16"):
        judges.fp16_ready(good | {"config": good["config"] | {"r": 16}})
    with pytest.raises(AssertionError, match="unscale FP16"):
        judges.fp16_ready(good | {"trainable_dtypes": ["float16"]})
    with pytest.raises(AssertionError, match="doubles"):
        judges.fp16_ready(good | {"frozen_dtypes": ["float32"]})
    merge = {"got": {"bf16": 0.02, "nf4": 0.5}, "want": {"bf16": 0.025, "nf4": 0.45}, "deploy_from": "bf16"}
    judges.merge_fidelity(merge)
    with pytest.raises(AssertionError, match="deploy_from is 'nf4'"):
        judges.merge_fidelity(merge | {"deploy_from": "nf4"})
    with pytest.raises(AssertionError, match="gap of 0"):
        judges.merge_fidelity(merge | {"got": {"bf16": 0.0, "nf4": 0.5}})
    with pytest.raises(AssertionError, match="measures"):
        judges.merge_fidelity(merge | {"got": {"bf16": 0.5, "nf4": 0.02}})


def test_memory_and_fp16_records_from_real_models(hidden_check):
    """The rule against a real AdamW step on the tiny Llama, and fp16 training with a GradScaler."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from labutils.models import ensure_tiny_model

    checks = hidden_check("lab10_variants_precision.kernel")
    model_id = str(ensure_tiny_model("causal_lm"))

    def rule(total, trainable, weight_bytes):
        return {"weights": round((total - trainable) * weight_bytes) + trainable * 4,
                "gradients": trainable * 4, "optimizer": trainable * 8}  # fmt: skip

    checks.memory({"MODEL": model_id, "training_bytes": rule})
    with pytest.raises(AssertionError, match="Only trainable parameters get gradients"):
        checks.memory(
            {"MODEL": model_id, "training_bytes": lambda t, n, b: rule(t, n, b) | {"gradients": t * 4}}
        )

    def fp16_model(**kwargs):
        base = AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.float16)
        return get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"), **kwargs)

    checks.fp16({"fp16_model": fp16_model()})
    with pytest.raises(AssertionError, match="unscale FP16"):
        checks.fp16({"fp16_model": fp16_model(autocast_adapter_dtype=False)})
    gpt2_names = {"MODEL": model_id, "variants": {"attention": LoraConfig(target_modules=["c_attn"])}}
    with pytest.raises(AssertionError, match=r"Mistake 1.*\['c_attn'\]|Mistake 1.*\{'c_attn'\}"):
        checks.variants_applied(
            gpt2_names
        )  # get_peft_model raises on the check's own base: named, not a crash


def test_choice_needs_a_measurement(judges):
    with pytest.raises(
        AssertionError, match=r"\[Choose a variant by what you measured.*\] `results` holds no measured"
    ):
        judges.variant_choice(choice({}, "dora", False))


# kernel.memory's record for the last hidden case, (total, trainable, weight_bytes) = (1000, 10, 4), and the
# tiny Llama after one AdamW step (bf16 base, fp32 adapter on all-linear).
RULE = {"weights": 990 * 4 + 10 * 4, "gradients": 10 * 4, "optimizer": 10 * 8}
MEMORY = {
    "cases": [{"args": [1000, 10, 4], "want": RULE, "got": RULE}],
    "measured": 36_751_872,
    "parts": {"weights": 35_879_424, "gradients": 290_816, "optimizer": 581_632},
    "predicted": 36_751_872,
}


def test_memory_judge_names_a_failing_function_and_a_wrong_total(judges):
    judges.memory_formula(MEMORY)
    failed = {"args": [1000, 10, 4], "want": RULE, "got": {}, "error": "TypeError: unsupported operand"}
    with pytest.raises(
        AssertionError, match=r"training_bytes\[1000, 10, 4\] raised TypeError: unsupported operand"
    ):
        judges.memory_formula(MEMORY | {"cases": [failed], "predicted": None})
    # 17,867,008 parameters, 72,704 of them trainable: the adapter's weights counted at bf16, not fp32
    with pytest.raises(AssertionError, match="36751872 bytes are held, and training_bytes predicts 36606464"):
        judges.memory_formula(MEMORY | {"predicted": 17_867_008 * 2 + 72_704 * 12})
    with pytest.raises(AssertionError, match="training_bytes predicts None"):
        judges.memory_formula(MEMORY | {"predicted": None})


def test_fp16_judge_names_a_failing_scaler_step(judges):
    good = {"trainable_dtypes": ["float32"], "frozen_dtypes": ["float16"], "step_error": "", "leaves": ALL}
    good["config"] = PLAIN["config"]
    error = "RuntimeError: expected scalar type Half but found Float"
    with pytest.raises(
        AssertionError, match=f"one GradScaler step failed: {error}. Fix: trainable parameters in fp32"
    ):
        judges.fp16_ready(good | {"step_error": error})


@pytest.mark.parametrize(
    ("config", "kind"),
    [({"r": 8, "lora_alpha": 16}, "dict"), ("LoraConfig(r=8)", "str"), (None, "NoneType")],
    ids=["dict", "text", "nothing"],
)
def test_every_variant_must_be_a_lora_config(hidden_check, verdict, config, kind):
    checks = hidden_check("lab10_variants_precision.kernel")
    found = verdict(checks.variants_applied, {"variants": {"dora": config}})
    assert found.startswith("[Compare LoRA's variants on one budget")
    assert f"variants['dora'] is a {kind}." in found
    assert "Fix: a LoraConfig each." in found


def test_the_kernel_reads_every_kind_of_truth_value_and_asks_nothing_else(hidden_check, monkeypatch):
    import numpy
    import torch

    kernel = hidden_check("lab10_variants_precision.kernel")
    seen = {}
    monkeypatch.setattr(kernel.judges, "variant_choice", lambda record: seen.setdefault("record", record))
    monkeypatch.setattr(kernel, "publish", lambda name, record: record)
    results = {name: {"seed_losses": runs} for name, runs in RUNS.items()}

    class Sly:
        def __bool__(self):
            raise AssertionError("the check asked a learner's object for its truth")

    for lead, want in ((True, True), (numpy.bool_(False), False), (torch.tensor(True), True), (Sly(), "Sly")):
        seen.clear()
        kernel.choice({"results": results, "chosen_variant": "rslora", "lead_is_real": lead})
        assert seen["record"]["lead_is_real"] == want
        assert type(seen["record"]["lead_is_real"]) is type(want)
