"""Lab 01's hidden checks (grader/checks/lab01_lora_anatomy/) on small hand-built modules: fast, no tiny-model builds."""

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
