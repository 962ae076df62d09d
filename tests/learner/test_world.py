"""The world's pretrained base: it knows the facts of its world, does not yet follow instructions, its
32,000-row form (the size it was pretrained for) predicts exactly what the small model it was trained as does,
and the 8,192-row form the course ships keeps every used token's logit."""

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


def _small_and_text(tok):
    from transformers import LlamaForCausalLM

    state = world.shipped_state()
    used = state["lm_head.weight"].shape[0] - 1
    small = LlamaForCausalLM(world.small_config(used + 1, world.causal_lm_config()))
    small.load_state_dict({k: v.float() for k, v in state.items()})
    return small.eval(), used, tok(world.corpus()[0], return_tensors="pt")["input_ids"]


def test_full_vocabulary_predicts_as_the_small_model(tok):
    from transformers import LlamaForCausalLM

    small, used, ids = _small_and_text(tok)
    config = world.causal_lm_config()
    full_model = LlamaForCausalLM(world.small_config(config["vocab_size"], config))
    world.full_state(full_model, world.shipped_state())
    with torch.no_grad():
        full = torch.log_softmax(full_model.eval()(input_ids=ids).logits, -1)
        logits = small(input_ids=ids).logits
    logits[..., used] += math.log(full_model.config.vocab_size - used)
    reference = torch.log_softmax(logits, -1)
    assert full_model.config.vocab_size == 32000
    torch.testing.assert_close(full[..., :used], reference[..., :used], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        torch.logsumexp(full[..., used:], -1), reference[..., used], atol=1e-4, rtol=1e-4
    )


def test_shipped_head_keeps_every_used_logit(base, tok):
    # The course ships the base with 8,192 rows (the world_lm role): every used row as trained, every unused
    # row the rest row, so greedy decoding never picks an unused token and picks what the small model picks.
    from labutils.models import RECIPES

    small, used, ids = _small_and_text(tok)
    with torch.no_grad():
        full = base(input_ids=ids).logits
        logits = small(input_ids=ids).logits
    assert base.config.vocab_size == RECIPES["world_lm"].config["vocab_size"] == 8192
    torch.testing.assert_close(full[..., :used], logits[..., :used], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        full[..., used:], logits[..., used:].expand_as(full[..., used:]), atol=1e-4, rtol=1e-4
    )
    assert torch.equal(full.argmax(-1), logits[..., :used].argmax(-1))


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


def test_the_capstone_role_is_the_shipped_base_as_saved_for_from_pretrained(base, tok):
    """course_model("world_lm") in the tiny profile: the shipped base in bf16 with the world's tokenizer and its
    special tokens, loaded by the real from_pretrained, predicting as the base does (up to bf16 rounding)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from labutils.models import ensure_tiny_model

    path = ensure_tiny_model("world_lm")
    loaded, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    assert tokenizer.get_vocab() == tok.get_vocab()
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert loaded.dtype == torch.bfloat16 and loaded.config.vocab_size == base.config.vocab_size
    ids = tok(world.corpus()[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(
            loaded.float()(input_ids=ids).logits.argmax(-1), base(input_ids=ids).logits.argmax(-1)
        )
