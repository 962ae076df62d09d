"""Lab 01's hidden checks (grader/checks/lab01_lora_anatomy/) on small hand-built modules and hand-made manifests, and
once on the tiny Llama (exercise 2's record): fast, no training."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from peft import LoraConfig
from torch import nn
from transformers.pytorch_utils import Conv1D


@pytest.fixture
def anatomy(hidden_check):
    return hidden_check("lab01_lora_anatomy.kernel")


def toy():
    """Names that separate peft's matching rules from the usual slips (T5's o/wo, NeoX's dense/dense_h_to_4h)."""

    def block():
        attn = nn.ModuleDict({"o": nn.Linear(8, 8), "dense": nn.Linear(8, 4)})
        mlp = nn.ModuleDict(
            {"wo": nn.Linear(16, 8), "dense_h_to_4h": nn.Linear(8, 16), "c_fc": Conv1D(12, 8)}
        )
        return nn.ModuleDict({"attn": attn, "mlp": mlp})

    torch.manual_seed(0)
    return nn.ModuleDict({"layers": nn.ModuleList([block(), block()])})


def reference(model, config):
    total = 0
    for name, module in model.named_modules():
        if isinstance(config.target_modules, str):
            selected = re.fullmatch(config.target_modules, name) is not None
        else:
            selected = any(name == t or name.endswith("." + t) for t in config.target_modules)
        if selected and isinstance(module, Conv1D):
            total += config.r * (module.nx + module.nf)
        elif selected and isinstance(module, nn.Linear):
            total += config.r * (module.in_features + module.out_features)
    return total


CONFIGS = [["o"], ["dense"], r".*\.dense", ["c_fc", "wo"], r".*\.mlp\..*"]


@pytest.mark.parametrize("targets", CONFIGS, ids=str)
def test_reference_count_equals_peft(anatomy, targets):
    config = LoraConfig(r=4, target_modules=targets)
    assert anatomy._count(toy(), config) == reference(toy(), config) == anatomy.peft_count(toy(), config)


@pytest.mark.parametrize(
    ("targets", "slip", "rule"),
    [
        (["o"], lambda n, t: any(n.endswith(x) for x in t), 1),
        (["dense"], lambda n, t: any(x in n for x in t), 1),
        (r".*\.dense", lambda n, t: re.match(t, n) is not None, 1),
    ],
)
def test_matching_slips_are_named(anatomy, targets, slip, rule):
    config = LoraConfig(r=4, target_modules=targets)
    got = anatomy._count(toy(), config, match=slip)
    want = anatomy.peft_count(toy(), config)
    assert got != want
    found, why, fix = anatomy._diagnose(toy(), config, got, want)
    assert found == rule and why and fix


def test_forgotten_b_is_named(anatomy):
    config = LoraConfig(r=4, target_modules=["o", "wo"])
    got = anatomy._count(toy(), config, size=lambda r, i, o, m: r * i)
    rule, why, _ = anatomy._diagnose(toy(), config, got, anatomy.peft_count(toy(), config))
    assert rule == anatomy.LORA_SHAPES and "forgets B" in why


def test_as_int_is_generous_but_not_to_bools(anatomy):
    assert anatomy._as_int(12) == anatomy._as_int(12.0) == anatomy._as_int(torch.tensor(12)) == 12
    assert anatomy._as_int(True) is None and anatomy._as_int(12.5) is None and anatomy._as_int("12") is None
    import numpy as np

    assert anatomy._as_int(np.int64(12)) == anatomy._as_int(np.float32(12.0)) == 12
    assert type(anatomy._as_int(np.int64(12))) is int


def test_a_count_of_the_learners_own_type_runs_none_of_its_code(anatomy):
    """Found by red-teaming: a lazy count whose __int__ wraps a copy of the model after the watch has ended (and
    registers itself as numbers.Integral) was read as a number. Only the built-in types' own methods run now."""
    import numbers

    ran = []

    class Lazy:
        def __int__(self):
            ran.append("int")
            return 12

        __index__ = __int__

        def __eq__(self, other):
            ran.append("eq")
            return True

        __hash__ = object.__hash__

    numbers.Integral.register(Lazy)

    class Lie(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            ran.append("torch")
            return super().__torch_function__(func, types, args, kwargs or {})

    assert anatomy._as_int(Lazy()) is None and anatomy._as_int(torch.tensor(12).as_subclass(Lie)) is None
    assert ran == [] and anatomy._shown(Lazy()) == "a Lazy"


def test_wrapping_a_copy_is_caught(anatomy):
    from peft import get_peft_model

    from checks import PeftMistake

    case = anatomy.Case("toy", ("o",), 4)
    config = case.config()
    result, wrapped = anatomy._call_watched(reference, toy(), config, case)
    assert result == anatomy.peft_count(toy(), config) and not wrapped

    def by_wrapping(model, cfg):
        return get_peft_model(copy.deepcopy(model), cfg).get_nb_trainable_parameters()[0]

    _, wrapped = anatomy._call_watched(by_wrapping, toy(), config, case)
    assert wrapped

    def broken(model, cfg):
        raise AttributeError("'Conv1D' object has no attribute 'in_features'")

    with pytest.raises(PeftMistake, match="Fix:"):
        anatomy._call_watched(broken, toy(), config, case)


def test_messages_fit_what_grading_keeps(anatomy):
    """Grading keeps a failure's first 400 characters: the longest diagnosis must still show its Fix."""
    from checks import PeftMistake

    case = anatomy.Case("causal_lm", anatomy.LLAMA_ATTENTION, 16, four_bit=True)
    slips = [*anatomy.MATCH_SLIPS.values(), *anatomy.SIZE_SLIPS.values(), (None, "", anatomy.GENERIC_FIX)]
    for _, why, fix in slips:
        with pytest.raises(PeftMistake) as raised:
            anatomy.fail(
                anatomy.LORA_SHAPES, f"{case.describe()}: you count 2,621,568, peft adds 53,248; {why}", fix
            )
        assert len("PeftMistake: " + str(raised.value)) <= 400


# ---- exercise 1: what the kernel makes of the learner's count_lora_parameters --------------------------


@pytest.fixture
def on_toy(anatomy, monkeypatch):
    """_run_cases on the toy model instead of the tiny course models: run(ns, targets) -> the verdict."""
    monkeypatch.setattr(anatomy, "_load", lambda case: toy())

    def run(ns, targets=("o", "wo")):
        from checks import PeftMistake

        try:
            anatomy._run_cases(ns, (anatomy.Case("toy", targets, 4),))
        except PeftMistake as err:
            return str(err)
        return ""

    return run


def wraps_a_copy(model, config):
    from peft import get_peft_model

    return get_peft_model(copy.deepcopy(model), config).get_nb_trainable_parameters()[0]


def freezes_its_model(model, config):
    for p in model.parameters():
        p.requires_grad_(False)
    return reference(model, config)


def slipped_count(model, config, **slip):
    """The toy's count with one slip, as a learner's function would compute it."""
    total = 0
    for name, module in model.named_modules():
        match = slip.get("match", lambda n, t: any(n == x or n.endswith("." + x) for x in t))
        if isinstance(module, nn.Linear) and match(name, config.target_modules):
            size = slip.get("size", lambda r, i, o, m: r * (i + o))
            total += size(config.r, module.in_features, module.out_features, module)
    return total


@pytest.mark.parametrize(
    ("function", "targets", "words"),
    [
        (42, ("o", "wo"), r"\[LoRA anatomy.*`count_lora_parameters` is not a function"),
        (wraps_a_copy, ("o", "wo"), r"\[Count from module shapes alone\].*wrapped or changed its model"),
        (freezes_its_model, ("o", "wo"), r"\[Count from module shapes alone\].*no requires_grad changes"),
        (lambda m, c: str(reference(m, c)), ("o", "wo"), r"returned '320' \(str\).*as an int"),
        (lambda m, c: None, ("o", "wo"), r"returned None \(NoneType\)"),
        (
            lambda m, c: slipped_count(m, c, size=lambda r, i, o, mod: r * i),
            ("o", "wo"),
            r"\[LoRA anatomy.*you count 192, peft adds 320; it forgets B",
        ),
        (
            lambda m, c: slipped_count(m, c, match=lambda n, t: any(n.endswith(x) for x in t)),
            ("o",),
            r"\[Mistake 1: .*you count 320, peft adds 128; a target matched names that merely end with it",
        ),
        (
            lambda m, c: reference(m, c) + 1,
            ("o", "wo"),
            r"you count 321, peft adds 320\. Fix: r·\(in \+ out\)",
        ),
    ],
    ids=[
        "not callable",
        "wraps a copy",
        "changes its model",
        "text",
        "nothing",
        "forgets B",
        "suffix",
        "off by one",
    ],
)
def test_each_wrong_count_function_is_named(on_toy, function, targets, words):
    assert on_toy({"count_lora_parameters": reference}, targets) == ""
    assert re.search(words, on_toy({"count_lora_parameters": function}, targets))


# ---- exercise 2: the wrapped course model, judged from its manifest -----------------------------------

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
TOTAL = 5_657_856  # the tiny Llama's parameters with r=16 on q/k/v/o (peft's counter: 53,248 trainable)


def course_record(
    wrapped=ATTENTION, r=16, alpha=32, trainable=53_248, percent="right", unfrozen=(), task_type="CAUSAL_LM"
):
    """The manifest (checks.inspect_model.manifest) of the tiny Llama wrapped on `wrapped`, as kernel._record
    publishes it, with `trainable_percent` as given ("right": peft's share; a value; or absent when None)."""
    prefix = "base_model.model.model.layers"
    modules = {"base_model.model.model.embed_tokens": "", "base_model.model.lm_head": ""}
    parameters = {"base_model.model.model.embed_tokens.weight": ["bfloat16", False, 2_097_152, False]}
    for layer in (0, 1):
        for block, names in (("self_attn", ATTENTION), ("mlp", MLP)):
            for name in names:
                full = f"{prefix}.{layer}.{block}.{name}"
                modules[full] = "lora" if name in wrapped else ""
                if name in wrapped:
                    parameters[f"{full}.base_layer.weight"] = ["bfloat16", False, 65_536, False]
                    parameters[f"{full}.lora_A.default.weight"] = ["float32", True, 4_096, False]
                    parameters[f"{full}.lora_B.default.weight"] = ["float32", True, 4_096, False]
                else:
                    parameters[f"{full}.weight"] = ["bfloat16", False, 65_536, False]
    parameters["base_model.model.lm_head.weight"] = ["bfloat16", False, 2_097_152, False]
    for name in unfrozen:
        parameters[name][1] = True
    if not trainable:
        parameters = {n: [d, False, k, q] for n, (d, _, k, q) in parameters.items()}
    value = 100 * trainable / TOTAL if percent == "right" else percent
    return {
        "peft": True,
        "active_adapter": "default",
        "modules": modules,
        "parameters": parameters,
        "trainable_total": [trainable, TOTAL],
        "peft_config": {
            "default": {
                "r": r,
                "lora_alpha": alpha,
                "target_modules": sorted(wrapped),
                "task_type": task_type,
            }
        },
        "trainable_percent": {
            "defined": percent is not None,
            "type": "NoneType" if percent is None else type(value).__name__,
            "value": value if isinstance(value, (int, float)) else None,
        },
    }


@pytest.fixture
def lab01_judges(hidden_check, monkeypatch):
    from labutils.profiles import PROFILE_VAR

    monkeypatch.setenv(PROFILE_VAR, "tiny")
    return hidden_check("lab01_lora_anatomy.judges")


def test_the_course_model_wrapped_as_asked_passes(lab01_judges):
    lab01_judges.course_model_wrapped(course_record())
    lab01_judges.course_model_share(course_record())
    lab01_judges.course_model_share(course_record(percent=0.9411))  # within 0.01 of 0.94113%


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            {"wrapped": ("q_proj", "v_proj")},
            r"\[Mistake 1: .*\] 4 attention projections carry no adapter \(k_proj, o_proj\) "
            r"\(target_modules was \['q_proj', 'v_proj'\]\)",
        ),
        (
            {"wrapped": ATTENTION + MLP},
            r"\[Mistake 1: .*\] 6 other modules are wrapped \(down_proj, gate_proj, up_proj\)",
        ),
        (
            {"wrapped": ("q_proj", "gate_proj")},
            r"carry no adapter \(k_proj, o_proj, v_proj\); 2 other modules",
        ),
        (
            {"r": 8, "alpha": 8},
            r"\[Mistake 2: .*\] lora_config has r=8, lora_alpha=8; the exercise asks for r=16,",
        ),
        ({"r": 16, "alpha": 16}, r"\[Mistake 2: .*Fix: LoraConfig\(r=16, lora_alpha=32"),
        ({"task_type": None}, r"\[Correct pattern: the task_type .*\] lora_config has task_type=None"),
    ],
    ids=["adapters missing", "MLP wrapped too", "both", "r=8 alpha=8", "alpha=r", "no task type"],
)
def test_wrong_targets_and_scaling_are_named(lab01_judges, change, words):
    with pytest.raises(AssertionError, match=words):
        lab01_judges.course_model_wrapped(course_record(**change))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            {"unfrozen": ["base_model.model.lm_head.weight"]},
            r"\[Check print_trainable_parameters\(\).*\] 1 base-model parameters are trainable "
            r"\(e\.g\. base_model\.model\.lm_head\.weight\)",
        ),
        ({"trainable": 0}, r"no parameter is trainable, not even the LoRA matrices"),
        ({"trainable": 169_736}, r"3\.00% of parameters train; LoRA should train well under 1%"),
        ({"percent": None}, r"`trainable_percent` is not defined\. Fix: define `trainable_percent`"),
        ({"percent": "0.94%"}, r"`trainable_percent` is a str, not a Real"),
        ({"percent": 0.0094113}, r"trainable_percent is 0\.0094113 \(that is a fraction, not a percentage\)"),
        ({"percent": 0.5}, r"trainable_percent is 0\.5; peft's own counter says 0\.941%"),
        ({"percent": True}, r"trainable_percent is True; peft's own counter"),
    ],
    ids=["base unfrozen", "nothing trains", "over 1%", "undefined", "text", "fraction", "wrong", "bool"],
)
def test_wrong_trainable_shares_are_named(lab01_judges, change, words):
    with pytest.raises(AssertionError, match=words):
        lab01_judges.course_model_share(course_record(**change))


def test_the_one_percent_rule_holds_in_the_hub_profile(lab01_judges, monkeypatch):
    """The hub's SmolLM2-360M trains 0.90% with r=16 on q/k/v/o and passes; over 1% fails there as in tiny."""
    from labutils.profiles import PROFILE_VAR

    monkeypatch.setenv(PROFILE_VAR, "hub")
    with pytest.raises(AssertionError, match=r"3\.00% of parameters train; LoRA should train well under 1%"):
        lab01_judges.course_model_share(course_record(trainable=169_736))
    hub = course_record()
    hub["trainable_total"] = [3_276_800, 361_821_120 + 3_276_800]  # bench/hub_memory.py's SmolLM2-360M shapes
    hub["trainable_percent"]["value"] = 100 * 3_276_800 / (361_821_120 + 3_276_800)
    lab01_judges.course_model_share(hub)


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import AutoModelForCausalLM

    from labutils.models import ensure_tiny_model

    return AutoModelForCausalLM.from_pretrained(ensure_tiny_model("causal_lm"), dtype=torch.float32)


def test_the_kernel_records_the_real_wrapped_model(anatomy, tiny_llama, verdict, monkeypatch):
    """The record kernel._record makes of a real PeftModel is the one the hand-made records imitate."""
    from peft import get_peft_model

    from labutils.profiles import PROFILE_VAR

    monkeypatch.setenv(PROFILE_VAR, "tiny")
    assert "`model` is not a PeftModel" in verdict(anatomy.course_model_wrapped, {"model": tiny_llama})
    assert "not a PeftModel" in verdict(
        anatomy.trainable_share, {"model": tiny_llama, "trainable_percent": 0.3}
    )
    gpt2_names = {
        "model": tiny_llama,
        "lora_config": LoraConfig(target_modules=["c_attn"]),
    }  # raised: unwrapped
    assert "Mistake 1" in verdict(anatomy.course_model_wrapped, gpt2_names)
    assert "(those are GPT-2 names)" in verdict(anatomy.course_model_wrapped, gpt2_names)
    model = get_peft_model(
        copy.deepcopy(tiny_llama),
        LoraConfig(r=16, lora_alpha=32, target_modules=list(ATTENTION), task_type="CAUSAL_LM"),
    )
    assert model.get_nb_trainable_parameters() == (53_248, TOTAL)
    share = 100 * 53_248 / TOTAL
    assert verdict(anatomy.course_model_wrapped, {"model": model}) == ""
    assert verdict(anatomy.trainable_share, {"model": model, "trainable_percent": share}) == ""
    assert "that is a fraction" in verdict(
        anatomy.trainable_share, {"model": model, "trainable_percent": share / 100}
    )
    assert "is a str, not a Real" in verdict(
        anatomy.trainable_share, {"model": model, "trainable_percent": "0.9%"}
    )
