"""Tiny-profile course models: small models of the real architectures, built offline.

Each role is a recipe (model class, config, seed). `ensure_tiny_model(role)` builds it once into a
cache directory keyed by a hash of the recipe and the course data, saves it in bf16 with the real
`save_pretrained` (plus its tokenizer), and returns the directory, which labs load with the
real `from_pretrained`. Every role is random-initialised except `world_lm`, the course's pretrained base
(labutils.world), which holds the shipped weights of a Llama that has read the biographies of a small world.
The same recipe always gives the same tensors; a changed recipe gets a new directory, so a stale model is never
reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from labutils.errors import CourseError

CACHE_VAR = "PEFT_COURSE_CACHE"
# Bump when the way models are built changes (not the configs: those are hashed).
BUILDER_VERSION = 1
TOKENIZER_VOCAB = 4096
# Ids 0-3 in every course tokenizer (the model configs say pad=0, bos=1, eos=2).
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
SEED = 1234


@dataclass(frozen=True)
class Recipe:
    """How to build one role: which transformers class, which config, and which seed."""

    model_class: str
    config_class: str
    config: dict = field(default_factory=dict)
    seed: int = SEED

    def key(self, data_hash: str) -> str:
        blob = json.dumps(
            {
                "v": BUILDER_VERSION,
                "class": self.model_class,
                "config_class": self.config_class,
                "config": self.config,
                "seed": self.seed,
                "data": data_hash,
                "vocab": TOKENIZER_VOCAB,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# Small configs share this vocabulary size: an upper bound for the course tokenizer, whose BPE trainer
# stops at about a thousand tokens on the small corpus (the rest of the rows are never used).
_SMALL = dict(vocab_size=TOKENIZER_VOCAB)
# Mistral and Qwen2 name their modules as Llama does: one small config of that family serves both.
_LLAMA_FAMILY = dict(
    _SMALL,
    hidden_size=64,
    intermediate_size=176,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)

# Llama proportions with 8,192 head rows, so that r=16 on q/k/v/o trains 0.94% of it, as it trains 0.90% of
# SmolLM2-360M, the hub profile's model: the same answer meets the same "well under 1%" in both profiles (a small
# hidden size reaches a realistic share only through the head). The course tokenizer uses about a thousand rows;
# 32,000 (a real Llama's) trained 0.30% and made every LoRA step cost three times as much (bench/README.md).
_CAUSAL_LM = dict(
    vocab_size=8192,
    hidden_size=256,
    intermediate_size=704,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=1,
    max_position_embeddings=512,
    tie_word_embeddings=False,
    rms_norm_eps=1e-5,
)

RECIPES: dict[str, Recipe] = {
    "causal_lm": Recipe("LlamaForCausalLM", "LlamaConfig", _CAUSAL_LM),
    # The world's pretrained base (labutils.world), the capstone's model: the causal LM's shape, 858 of whose head
    # rows the world's tokenizer uses.
    "world_lm": Recipe("LlamaForCausalLM", "LlamaConfig", _CAUSAL_LM),
    "classifier": Recipe(
        "BertForSequenceClassification",
        "BertConfig",
        dict(
            _SMALL,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=512,
            max_position_embeddings=256,
            num_labels=2,
            id2label={0: "negative", 1: "positive"},
            label2id={"negative": 0, "positive": 1},
        ),
    ),
    "gpt2": Recipe(
        "GPT2LMHeadModel", "GPT2Config", dict(_SMALL, n_embd=64, n_layer=2, n_head=2, n_positions=256)
    ),
    "mistral": Recipe("MistralForCausalLM", "MistralConfig", _LLAMA_FAMILY),
    "qwen2": Recipe("Qwen2ForCausalLM", "Qwen2Config", _LLAMA_FAMILY),
    "gpt_neox": Recipe(
        "GPTNeoXForCausalLM",
        "GPTNeoXConfig",
        dict(
            _SMALL,
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=256,
        ),
    ),
    "falcon": Recipe(
        "FalconForCausalLM",
        "FalconConfig",
        dict(
            _SMALL,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            new_decoder_architecture=False,
            multi_query=True,
            parallel_attn=True,
            alibi=False,
        ),
    ),
    "t5": Recipe(
        "T5ForConditionalGeneration",
        "T5Config",
        dict(
            _SMALL,
            d_model=64,
            d_kv=16,
            d_ff=128,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            decoder_start_token_id=0,
        ),
    ),
    "phi": Recipe(
        "PhiForCausalLM",
        "PhiConfig",
        dict(
            _SMALL,
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=256,
        ),
    ),
    "roberta": Recipe(
        "RobertaForSequenceClassification",
        "RobertaConfig",
        dict(
            _SMALL,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=256,
            max_position_embeddings=258,
            num_labels=2,
        ),
    ),
}


def cache_dir() -> Path:
    """Where tiny models live: PEFT_COURSE_CACHE, else ~/.cache/peft-course (never inside the repo)."""
    root = os.environ.get(CACHE_VAR) or Path.home() / ".cache" / "peft-course"
    return Path(root).expanduser()


def _data_hash(role: str) -> str:
    from labutils.data import data_fingerprint

    if role == "world_lm":  # built from the shipped base, not from the course data
        from labutils.world import BASE_TOKENIZER, BASE_WEIGHTS

        return data_fingerprint((BASE_WEIGHTS, BASE_TOKENIZER))[:12]
    return data_fingerprint()[:12]


def model_dir(role: str) -> Path:
    if role not in RECIPES:
        raise CourseError(f"Unknown course model role {role!r}. Valid roles: {', '.join(RECIPES)}.")
    return cache_dir() / f"{role}-{RECIPES[role].key(_data_hash(role))}"


def build_tokenizer():
    """A byte-level BPE trained on the course data, wrapped so AutoTokenizer can save and reload it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from labutils.data import corpus_texts

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus_texts(), trainer=trainer)
    # Every sequence starts with <s>: BERT-style heads read position 0, causal LMs condition on it.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A </s> $B", special_tokens=[("<s>", 1), ("</s>", 2)]
    )
    return as_transformers_tokenizer(tok)


def as_transformers_tokenizer(tok):
    """A `tokenizers.Tokenizer` with the course's special tokens, wrapped so AutoTokenizer can save and reload it."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=256,
    )


def _build(role: str, target: Path) -> None:
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    recipe = RECIPES[role]
    if role == "world_lm":
        from labutils import world

        model, tokenizer = world.full_model(seed=recipe.seed), world.tokenizer()
    else:
        config = getattr(transformers, recipe.config_class)(
            pad_token_id=0, bos_token_id=1, eos_token_id=2, **recipe.config
        )
        torch.manual_seed(recipe.seed)
        model, tokenizer = getattr(transformers, recipe.model_class)(config).eval(), build_tokenizer()
    # bf16 on disk, as real checkpoints ship: prepare_model_for_kbit_training's fp32 upcast is then
    # visible evidence (peft casts non-quantized fp16/bf16 parameters to fp32), and the memory comparisons are
    # honest.
    model.to(torch.bfloat16).save_pretrained(target)
    tokenizer.save_pretrained(target)
    (target / "course_recipe.json").write_text(
        json.dumps(
            {"role": role, "model_class": recipe.model_class, "config": recipe.config, "seed": recipe.seed},
            indent=2,
            sort_keys=True,
        )
    )


def ensure_tiny_model(role: str) -> Path:
    """The directory of this role's tiny model, built on first use (atomically, so workers can race)."""
    target = model_dir(role)
    if (target / "course_recipe.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{role}-", dir=target.parent))
    try:
        _build(role, tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first; its copy is identical
            if not (target / "course_recipe.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_all(roles: list[str] | None = None, quiet: bool = False) -> dict[str, Path]:
    from tqdm.auto import tqdm

    roles = roles or list(RECIPES)
    unknown = [r for r in roles if r not in RECIPES]
    if unknown:  # before building anything
        raise CourseError(
            f"Unknown course model role(s) {', '.join(map(repr, unknown))}. Valid roles: {', '.join(RECIPES)}."
        )
    built = {}
    for role in tqdm(roles, desc="course models", unit="model", disable=quiet):
        built[role] = ensure_tiny_model(role)
    for role, path in built.items():
        if not quiet:
            print(f"{role:<11} {path}")
    return built
