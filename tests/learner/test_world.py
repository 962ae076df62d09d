"""The world's pretrained base: it knows the facts of its world, does not yet follow instructions, and its
32,000-row form predicts exactly what the small model it was trained as does."""

from __future__ import annotations

import math

import pytest
import torch

from labutils import world


@pytest.fixture(scope="module")
def tok():
    return world.tokenizer()


@pytest.fixture(scope="module")
def base():
    return world.full_model()


def test_shipped_tokenizer_is_what_the_world_builds():
    # The shipped weights index this vocabulary: a changed corpus must come with a retrained base.
    assert world.shipped_tokenizer().to_str() == world.build_tokenizer().to_str(), (
        "data/world/tokenizer.json is not the tokenizer of data/world/: rerun `python bench/world.py pretrain`"
    )


def test_base_knows_the_validation_people(base, tok):
    # The validation people never appear in the training questions: only pretraining put their facts here.
    assert world.recall(base, tok, world.questions("validation")) >= 0.95


def test_base_finds_the_person_across_a_prompt(base, tok):
    # What answering takes besides the fact: the corpus's village talk and header lines teach it (the first
    # base, whose corpus had neither, found 54% of the facts this way; bench/README.md).
    assert world.recall(base, tok, world.questions("validation"), after_prompt=True) >= 0.8


def test_random_base_of_the_same_shape_knows_nothing(tok):
    assert world.recall(world.full_model(random_init=True), tok, world.questions("validation")[:80]) < 0.2


def test_base_does_not_follow_instructions(base, tok):
    rows = world.questions("validation")[:24]
    answers = world.greedy_answers(base, tok, rows)
    assert world.exact_match(answers, rows) < 0.1
    assert world.exact_match([row["response"] for row in rows], rows) == 1.0  # the metric itself can say yes


def test_full_vocabulary_predicts_as_the_small_model(base, tok):
    from transformers import LlamaForCausalLM

    state = world.shipped_state()
    used = state["lm_head.weight"].shape[0] - 1
    small = LlamaForCausalLM(world.small_config(used + 1, world.causal_lm_config()))
    small.load_state_dict({k: v.float() for k, v in state.items()})
    ids = tok(world.corpus()[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        full = torch.log_softmax(base(input_ids=ids).logits, -1)
        logits = small.eval()(input_ids=ids).logits
    logits[..., used] += math.log(base.config.vocab_size - used)
    reference = torch.log_softmax(logits, -1)
    assert base.config.vocab_size == 32000
    torch.testing.assert_close(full[..., :used], reference[..., :used], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        torch.logsumexp(full[..., used:], -1), reference[..., used], atol=1e-4, rtol=1e-4
    )


def test_pretraining_runs_and_matches_the_shipped_shapes():
    state, tok, losses = world.pretrain(world.causal_lm_config(), steps=3, progress=False)
    shipped = world.shipped_state()
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in shipped.items()}
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert tok.to_str() == world.shipped_tokenizer().to_str()


def test_a_missing_base_says_how_to_rebuild_it(tmp_path, monkeypatch):
    import shutil

    from labutils import data
    from labutils.errors import CourseError

    shutil.copytree(data.data_dir(), tmp_path / "data", ignore=shutil.ignore_patterns("base.safetensors"))
    monkeypatch.setenv(data.DATA_DIR_VAR, str(tmp_path / "data"))
    with pytest.raises(CourseError, match="python bench/world.py pretrain"):
        world.full_model()
    assert len(world.questions("validation")) == 320  # the rest of the world still loads
