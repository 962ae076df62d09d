"""Tiny course models: real checkpoints of the real architectures, bf16 on disk, deterministic, cached."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)
from transformers.pytorch_utils import Conv1D

from labutils import data, models
from labutils.data import format_instruction, format_prompt
from labutils.models import CACHE_VAR, RECIPES, cache_dir, ensure_tiny_model, model_dir

REPO = Path(__file__).resolve().parents[2]

AUTO_CLASS = {
    "causal_lm": AutoModelForCausalLM,
    "world_lm": AutoModelForCausalLM,
    "classifier": AutoModelForSequenceClassification,
    "gpt2": AutoModelForCausalLM,
    "mistral": AutoModelForCausalLM,
    "qwen2": AutoModelForCausalLM,
    "gpt_neox": AutoModelForCausalLM,
    "falcon": AutoModelForCausalLM,
    "t5": AutoModelForSeq2SeqLM,
    "phi": AutoModelForCausalLM,
    "roberta": AutoModelForSequenceClassification,
}

# The Linear (gpt2: Conv1D) leaf names of each architecture, heads excluded.
LLAMA_LIKE = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
LEAF_NAMES = {
    "causal_lm": LLAMA_LIKE,
    "world_lm": LLAMA_LIKE,
    "mistral": LLAMA_LIKE,
    "qwen2": LLAMA_LIKE,
    "gpt2": {"c_attn", "c_proj", "c_fc"},
    "classifier": {"query", "key", "value", "dense"},
    "roberta": {"query", "key", "value", "dense"},
    "t5": {"q", "k", "v", "o", "wi", "wo"},
    "falcon": {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"},
    "gpt_neox": {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"},
    "phi": {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"},
}
HEADS = {"lm_head", "classifier", "score", "out_proj"}  # out_proj: roberta's classification head

COURSE_TEXTS = [
    format_prompt("What is 4 plus 4?") + "8",
    "The remote was dreadful and the keyboard felt boring.",
    "Write in capitals: HAPPY BOX 1234, x=56.7% and 0.5!",
    "  Two  spaces, a tab\there,\n\nand a café — 3×4.",
]


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


@pytest.fixture(scope="module")
def causal_dir() -> Path:
    return ensure_tiny_model("causal_lm")


@pytest.fixture(scope="module")
def course_tokenizer(causal_dir):
    return AutoTokenizer.from_pretrained(causal_dir)


# --- the causal LM --------------------------------------------------------------------------------------


def test_causal_lm_loads_with_the_real_auto_classes(causal_dir):
    model = AutoModelForCausalLM.from_pretrained(causal_dir)
    tokenizer = AutoTokenizer.from_pretrained(causal_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.architectures == ["LlamaForCausalLM"]
    for key, value in RECIPES["causal_lm"].config.items():
        assert getattr(model.config, key) == value, key
    batch = tokenizer(["### Instruction:\nWhat is 2 plus 3?\n### Response:\n"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], 8192)
    assert torch.isfinite(logits.float()).all()


def test_causal_lm_is_bf16_on_disk_and_in_config(causal_dir):
    with safe_open(causal_dir / "model.safetensors", framework="pt") as f:
        dtypes = {key: f.get_slice(key).get_dtype() for key in f.keys()}
    assert dtypes and set(dtypes.values()) == {"BF16"}, dtypes
    assert json.loads((causal_dir / "config.json").read_text())["dtype"] == "bfloat16"
    assert AutoConfig.from_pretrained(causal_dir).dtype == torch.bfloat16


def test_same_recipe_gives_identical_tensors_in_another_cache(causal_dir, tiny_cache):
    rebuilt = ensure_tiny_model("causal_lm")
    assert rebuilt.parent == tiny_cache and rebuilt != causal_dir
    assert rebuilt.name == causal_dir.name  # same recipe, same key
    first, second = _safetensors(causal_dir), _safetensors(rebuilt)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    # And not trivially: the random init really is random (distinct layers differ).
    assert not torch.equal(
        first["model.layers.0.self_attn.q_proj.weight"], first["model.layers.1.self_attn.q_proj.weight"]
    )


def test_second_call_reuses_the_cache(causal_dir, monkeypatch):
    weights = causal_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns

    def no_rebuild(role, target):
        raise AssertionError(f"rebuilt {role} although it is cached")

    monkeypatch.setattr(models, "_build", no_rebuild)
    assert ensure_tiny_model("causal_lm") == causal_dir
    assert weights.stat().st_mtime_ns == before


def test_build_leaves_only_the_model_dir(tiny_cache):
    path = ensure_tiny_model("phi")
    assert [p.name for p in tiny_cache.iterdir()] == [path.name]  # no leftover .phi-* temp dir
    assert {"config.json", "model.safetensors", "tokenizer.json", "course_recipe.json"} <= {
        p.name for p in path.iterdir()
    }


def test_failed_build_leaves_nothing_behind(tiny_cache, monkeypatch):
    def broken(role, target):
        (target / "model.safetensors").write_bytes(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(models, "_build", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_tiny_model("phi")
    assert list(tiny_cache.iterdir()) == []


def test_losing_a_build_race_returns_the_winner(tiny_cache, monkeypatch):
    real_build = models._build

    def build_then_lose(role, target):
        real_build(role, target)
        winner = model_dir(role)  # another worker finishes first
        shutil.copytree(target, winner)
        (winner / "winner").touch()

    monkeypatch.setattr(models, "_build", build_then_lose)
    path = ensure_tiny_model("phi")
    assert (path / "winner").exists()
    assert [p.name for p in tiny_cache.iterdir()] == [path.name]


def test_changed_recipe_gets_a_new_directory(tiny_cache, monkeypatch):
    original = ensure_tiny_model("phi")
    recipe = RECIPES["phi"]
    monkeypatch.setitem(
        RECIPES, "phi", dataclasses.replace(recipe, config={**recipe.config, "num_hidden_layers": 1})
    )
    changed = ensure_tiny_model("phi")
    assert changed != original and changed.parent == original.parent
    assert AutoConfig.from_pretrained(changed).num_hidden_layers == 1
    assert AutoConfig.from_pretrained(original).num_hidden_layers == 2  # the old build is untouched
    monkeypatch.setitem(RECIPES, "phi", dataclasses.replace(recipe, seed=recipe.seed + 1))
    assert model_dir("phi") not in (original, changed)


def test_changed_data_gets_a_new_directory(tmp_path, monkeypatch):
    before = model_dir("phi")
    copy = tmp_path / "data"
    for rel in data.DATA_FILES:
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data.data_dir() / rel, copy / rel)
    monkeypatch.setenv(data.DATA_DIR_VAR, str(copy))
    assert model_dir("phi") == before  # same bytes elsewhere: same key
    with (copy / data.SENTIMENT_FILES["train"]).open("a", encoding="utf-8") as f:
        f.write("A new review.,1\n")
    assert model_dir("phi") != before  # the tokenizer is trained on the data


def test_trainable_share_is_realistic(causal_dir):
    from peft import LoraConfig, get_peft_model

    model = AutoModelForCausalLM.from_pretrained(causal_dir)
    config = LoraConfig(
        r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    # r * (in + out) per wrapped Linear: q, o are 256->256, k, v are 256->64 (1 KV head of 64), 2 layers.
    assert trainable == 2 * 16 * ((256 + 256) * 2 + (256 + 64) * 2)
    share = 100 * trainable / total
    assert 0.85 < share < 1.0, f"{share:.3f}%"  # SmolLM2-360M, the hub profile's model: 0.90%


def test_cache_is_outside_the_repo_by_default(monkeypatch):
    monkeypatch.delenv(CACHE_VAR, raising=False)
    default = cache_dir()
    assert default == Path.home() / ".cache" / "peft-course"
    assert not default.resolve().is_relative_to(REPO.resolve())
    monkeypatch.setenv(CACHE_VAR, "~/elsewhere")
    assert cache_dir() == Path.home() / "elsewhere"


# --- every role ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(RECIPES))
def test_every_role_builds_and_loads(role):
    path = ensure_tiny_model(role)
    model = AUTO_CLASS[role].from_pretrained(path)
    assert type(model).__name__ == RECIPES[role].model_class
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert len(tokenizer) <= model.get_input_embeddings().weight.shape[0]
    assert len(tokenizer) <= model.config.vocab_size
    for name in ("pad", "bos", "eos"):
        assert getattr(model.config, f"{name}_token_id") == getattr(tokenizer, f"{name}_token_id"), name
    batch = tokenizer(COURSE_TEXTS[:2], return_tensors="pt", padding=True)
    with torch.no_grad():
        if role == "t5":
            out = model(**batch, decoder_input_ids=batch["input_ids"][:, :3])
        else:
            out = model(**batch)
    assert torch.isfinite(out.logits.float()).all()
    if AUTO_CLASS[role] is AutoModelForSequenceClassification:
        assert out.logits.shape == (2, 2)


@pytest.mark.parametrize("role", list(RECIPES))
def test_linear_leaf_names_match_the_facts_table(role):
    model = AUTO_CLASS[role].from_pretrained(ensure_tiny_model(role))
    leaves = {}
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, Conv1D)):
            leaves.setdefault(name.rsplit(".", 1)[-1], set()).add(type(module).__name__)
    assert set(leaves) - HEADS == LEAF_NAMES[role]
    if role == "gpt2":
        assert leaves["c_attn"] == {"Conv1D"}


# world_lm carries the world's tokenizer, which its weights index (tests/learner/test_world.py).
COURSE_TOKENIZER_ROLES = [r for r in RECIPES if r != "world_lm"]


@pytest.mark.parametrize("role", COURSE_TOKENIZER_ROLES)
def test_every_role_has_the_course_tokenizer(role, course_tokenizer):
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model(role))
    assert tokenizer.get_vocab() == course_tokenizer.get_vocab()
    specials = ("pad", "bos", "eos", "unk")
    assert [getattr(tokenizer, f"{name}_token") for name in specials] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert [getattr(tokenizer, f"{name}_token_id") for name in specials] == [0, 1, 2, 3]
    for text in COURSE_TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_tokenizer_round_trips_course_data(course_tokenizer):
    instructions = data._read_jsonl(data.data_dir() / data.INSTRUCTION_FILES["validation"])
    reviews = data._read_csv(data.data_dir() / data.SENTIMENT_FILES["validation"])
    texts = [format_instruction(row) for row in instructions] + [row["text"] for row in reviews]
    for text in texts:
        ids = course_tokenizer(text)["input_ids"]
        assert ids[0] == course_tokenizer.bos_token_id
        assert course_tokenizer.decode(ids[1:]) == text
    # The eos a training text ends with is one token, not spelled out.
    ids = course_tokenizer(format_instruction(instructions[0], course_tokenizer.eos_token))["input_ids"]
    assert ids[-1] == course_tokenizer.eos_token_id


@pytest.mark.parametrize("role", [r for r in COURSE_TOKENIZER_ROLES if r != "qwen2"])
def test_roles_encode_like_the_course_tokenizer(role, course_tokenizer):
    # qwen2 is left out: transformers 5 loads Qwen2Tokenizer for model_type qwen2 whatever
    # tokenizer_config.json says, with Qwen's own pre-tokenizer (one digit per token) and an NFC
    # normalizer; same vocabulary and round trip (checked above), different ids for "4 plus 4".
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model(role))
    for text in COURSE_TEXTS:
        assert tokenizer(text)["input_ids"] == course_tokenizer(text)["input_ids"], text
