"""Lab 03's hidden checks (grader/checks/lab03_rank_alpha/): counts from peft on the meta device, no training."""

from __future__ import annotations

import pytest
from peft import LoraConfig, TaskType

LLAMA = ["q_proj", "k_proj", "v_proj", "o_proj"]


@pytest.fixture
def rank(hidden_check):
    return hidden_check("lab03_rank_alpha.kernel")


@pytest.fixture
def good_sweep(rank):
    # The tiny Llama: per unit of r, q and o add 2 x 256 each, k and v 256 + 64 each, over 2 layers.
    return {r: {"trainable": 3328 * r, "loss": 10.0 - 0.1 * i} for i, r in enumerate(rank.RANKS)}


def test_peft_counts_are_linear_in_r(rank):
    assert [rank.peft_trainable(r) for r in (2, 8, 64)] == [6656, 26624, 212992]


def test_a_correct_sweep_passes_and_extra_ranks_are_welcome(rank, good_sweep, verdict):
    ns = {"sweep": good_sweep | {1: {"trainable": 3328, "loss": 10.5}}, "BASE_LOSS": 10.6}
    for check in (rank.sweep_ranks, rank.sweep_counts, rank.sweep_losses):
        assert verdict(check, ns) == ""


def test_sweep_mistakes_are_named(rank, good_sweep, verdict):
    missing = {r: v for r, v in good_sweep.items() if 8 <= r <= 32}
    assert "below 8" in verdict(rank.sweep_ranks, {"sweep": missing})
    by_hand = {r: {"trainable": 2048 * r, "loss": v["loss"]} for r, v in good_sweep.items()}
    assert "peft counts 6,656" in verdict(rank.sweep_counts, {"sweep": by_hand})
    same = {r: {"trainable": v["trainable"], "loss": 10.3} for r, v in good_sweep.items()}
    assert "same loss" in verdict(rank.sweep_losses, {"sweep": same})
    assert "not below the untrained" in verdict(rank.sweep_losses, {"sweep": good_sweep, "BASE_LOSS": 9.0})
    assert "not a dict" in verdict(rank.sweep_counts, {"sweep": {2: (6656, 9.0)}})
    assert "not defined" in verdict(rank.sweep_ranks, {})


def config(r=16, alpha=None, targets=LLAMA, task_type="CAUSAL_LM", **kw):
    return LoraConfig(
        r=r, lora_alpha=2 * r if alpha is None else alpha, target_modules=targets, task_type=task_type, **kw
    )


@pytest.mark.parametrize(
    "cfg",
    [
        config(),
        config(r=8, targets={"q_proj", "k_proj", "v_proj", "o_proj"}, task_type=TaskType.CAUSAL_LM),
        config(targets=r".*\.(q|k|v|o)_proj"),
        config(targets="all-linear"),
    ],
)
def test_valid_configs_pass(rank, cfg, verdict):
    for check in (rank.chosen_rank, rank.chosen_alpha, rank.chosen_targets):
        assert verdict(check, {"chosen_config": cfg}) == ""


def test_config_mistakes_are_named(rank, verdict):
    assert "Mistake 2" in verdict(rank.chosen_rank, {"chosen_config": config(r=64)})
    assert "above 64" in verdict(rank.chosen_rank, {"chosen_config": config(r=128)})
    assert "too low" in verdict(rank.chosen_rank, {"chosen_config": config(r=2)})
    assert "LoRA alpha" in verdict(rank.chosen_alpha, {"chosen_config": config(alpha=16)})
    assert "alpha/sqrt(r)" in verdict(rank.chosen_alpha, {"chosen_config": config(use_rslora=True)})
    assert "Mistake 1" in verdict(rank.chosen_targets, {"chosen_config": config(targets=["query", "value"])})
    partial = verdict(rank.chosen_targets, {"chosen_config": config(targets=["q_proj", "v_proj"])})
    assert "k_proj, o_proj" in partial
    assert "task_type" in verdict(rank.chosen_targets, {"chosen_config": config(task_type=None)})
