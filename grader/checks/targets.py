"""Hidden checks for lab 02 (target modules per architecture).

The learner writes `attention_targets(model)`, returning `target_modules` (a list of names or a
full-match regex string). The checks call it on fresh tiny models of every course architecture, the
three the lab shows and seven it never shows, wrap each with `get_peft_model` and compare the modules
LoRA ACTUALLY wrapped with the architecture's attention projections: every query, key and value
projection (fused or not) in every layer must carry an adapter; the attention output projection may;
nothing else may (no MLP, embeddings, pooler or heads). They never read printed output.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass

from checks import error_text, fail, judges, need
from checks.evidence import publish
from checks.inspect_model import base_model, lora_wrapped, manifest


@dataclass(frozen=True)
class Attention:
    """Where one naming family keeps its attention projections (full-name regexes)."""

    required: str  # every query/key/value projection, fused or separate
    optional: str  # the attention output projection
    names: str  # how the fix names them


_LLAMA_LIKE = Attention(
    r".*\.self_attn\.[qkv]_proj", r".*\.self_attn\.o_proj", "q_proj, k_proj, v_proj (o_proj optional)"
)
_BERT_LIKE = Attention(
    r".*\.attention\.self\.(query|key|value)",
    r".*\.attention\.output\.dense",
    "query, key, value (the other `dense` layers are MLP, pooler or head)",
)
ATTENTION = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "phi": Attention(
        r".*\.self_attn\.[qkv]_proj",
        r".*\.self_attn\.dense",
        "q_proj, k_proj, v_proj (self_attn.dense optional; fc1/fc2 are the MLP)",
    ),
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "gpt2": Attention(
        r".*\.attn\.c_attn",
        r".*\.attn\.c_proj",
        "c_attn, the fused q/k/v Conv1D (attn.c_proj optional; c_fc and mlp.c_proj are the MLP)",
    ),
    "gpt_neox": Attention(
        r".*\.attention\.query_key_value",
        r".*\.attention\.dense",
        "query_key_value, the fused q/k/v layer (attention.dense optional; dense_h_to_4h/dense_4h_to_h are the MLP)",
    ),
    "falcon": Attention(
        r".*\.self_attention\.query_key_value",
        r".*\.self_attention\.dense",
        "query_key_value, the fused q/k/v layer (self_attention.dense optional; dense_h_to_4h/dense_4h_to_h are the MLP)",
    ),
    "t5": Attention(
        r".*\.(SelfAttention|EncDecAttention)\.[qkv]",
        r".*\.(SelfAttention|EncDecAttention)\.o",
        "q, k, v in SelfAttention and EncDecAttention (o optional; wi/wo are the MLP)",
    ),
}

# Course role -> (readable name, Auto class). The lab shows the first three; the rest it never shows.
SHOWN = {"causal_lm": "Llama", "classifier": "BERT", "gpt2": "GPT-2"}
UNSEEN = {
    "mistral": "Mistral",
    "qwen2": "Qwen2",
    "gpt_neox": "GPT-NeoX",
    "falcon": "Falcon",
    "t5": "T5",
    "phi": "Phi",
    "roberta": "RoBERTa",
}
AUTO_CLASS = {
    "classifier": "AutoModelForSequenceClassification",
    "roberta": "AutoModelForSequenceClassification",
}
AUTO_CLASS["t5"] = "AutoModelForSeq2SeqLM"
MODEL_TYPE = {"causal_lm": "llama", "classifier": "bert"}  # the other roles are named after their model_type

DEFINITION = (
    "wrap every query, key and value projection (fused ones count) in every layer, optionally the attention "
    "output projection, nothing else (no MLP, embeddings or heads); find the names with named_modules() "
    "or config.model_type."
)


def load_tiny(role: str):
    """A fresh tiny course model of this role, loaded with its Auto class (never the learner's objects)."""
    import transformers

    from labutils.models import ensure_tiny_model

    auto = getattr(transformers, AUTO_CLASS.get(role, "AutoModelForCausalLM"))
    transformers.utils.logging.disable_progress_bar()
    return auto.from_pretrained(ensure_tiny_model(role))


def _pattern(name: str) -> str:
    """A module name with layer numbers folded: base_model.model.model.layers.0.mlp.up_proj -> model.layers.N.mlp.up_proj."""
    return re.sub(r"\.\d+(?=\.|$)", ".N", name.removeprefix("base_model.model."))


def _shown(names, most: int = 2) -> str:
    counts = sorted(Counter(_pattern(n) for n in names).items())
    shown = ", ".join(f"{p} (x{c})" if c > 1 else p for p, c in counts[:most])
    return shown + (f" and {len(counts) - most} more" if len(counts) > most else "")


def _count(names, what: str) -> str:
    return f"{len(names)} {what}" + ("" if len(names) == 1 else "s")


@dataclass
class Report:
    wrapped: set[str]
    missed: list[str]
    stray: list[str]


def compare(model, wrapped: set[str]) -> Report:
    """Which attention projections of `model` (a PeftModel or plain model) lack an adapter, and what else got one."""
    return compare_names(base_model(model).config.model_type, [n for n, _ in model.named_modules()], wrapped)


def compare_names(model_type: str, names: list[str], wrapped: set[str]) -> Report:
    """compare() from a model's type and module names (a manifest's)."""
    attention = ATTENTION[model_type]
    required = {n for n in names if re.fullmatch(attention.required, n)}
    optional = {n for n in names if re.fullmatch(attention.optional, n)}
    missed = sorted(required - wrapped)
    stray = sorted(n for n in wrapped if n not in required | optional)
    return Report(wrapped, missed, stray)


def _short(targets) -> str:
    text = repr(targets)
    return text if len(text) <= 60 else text[:57] + "..."


def _as_targets(value):
    """The learner's return value as target_modules: a regex string or a list of names."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, set, frozenset)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def wrap_with(model, targets):
    """get_peft_model with these targets: the modules it really wrapped, or the error it raised."""
    from peft import LoraConfig, get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Conv1D's fan_in_fan_out notice
        peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    return peft_model, lora_wrapped(peft_model)


def problem(role: str, title: str, attention_targets) -> str:
    """What is wrong with attention_targets on this architecture ('' if nothing)."""
    model = load_tiny(role)
    where = f"{title} ({model.config.model_type})"
    try:
        returned = attention_targets(model)
    except Exception as err:  # any learner error is a verdict on this architecture
        return f"on {where} attention_targets raised {type(err).__name__}: {error_text(err)[:60]}"
    targets = _as_targets(returned)
    if targets is None:
        return (
            f"on {where} attention_targets returned {type(returned).__name__} {str(returned)[:80]!r}, "
            "not a non-empty list of module names or a regex string"
        )
    try:
        peft_model, wrapped = wrap_with(model, targets)
    except Exception as err:
        text = error_text(err)
        if "not found in the base model" in text:
            return f"on {where} target_modules={_short(targets)} match nothing: 'not found in the base model'"
        first = text.splitlines()[0] if text else ""
        return f"on {where} target_modules={_short(targets)} made get_peft_model raise {type(err).__name__}: {first[:80]}"
    report = compare(peft_model, wrapped)
    found = []
    if report.missed:
        found.append(f"missed {_count(report.missed, 'attention projection')}: {_shown(report.missed)}")
    if report.stray:
        found.append(f"also wrapped {_count(report.stray, 'non-attention module')}: {_shown(report.stray)}")
    if not found:
        return ""
    quiet = " (no error: a partial match is silent)" if report.missed and wrapped else ""
    return f"on {where} target_modules={_short(targets)} " + " and ".join(found) + quiet


def _targets_on(ns: dict, roles: dict[str, str], which: str) -> None:
    attention_targets = need(ns, "attention_targets")
    if not callable(attention_targets):
        fail(
            1,
            "`attention_targets` is not a function.",
            "def attention_targets(model): ... return target_modules.",
        )
    problems = {role: p for role, title in roles.items() if (p := problem(role, title, attention_targets))}
    if problems:
        first, *others = problems
        also = f" Also wrong on: {', '.join(roles[r] for r in others)}." if others else ""
        fail(
            1,
            f"{which}, {problems[first]}.{also}",
            f"{roles[first]}'s attention projections are {ATTENTION[MODEL_TYPE.get(first, first)].names}. In general, "
            + DEFINITION,
        )


def attention_targets_shown(ns: dict) -> None:
    """attention_targets selects exactly the attention projections of Llama, BERT and GPT-2."""
    _targets_on(ns, SHOWN, "On the architectures this lab shows")


def attention_targets_unseen(ns: dict) -> None:
    """attention_targets also works on architectures the lab never shows (naming families, discovery)."""
    _targets_on(ns, UNSEEN, "On architectures the lab does not show")


def lora_model(ns: dict) -> None:
    """`lora_model` is the BERT classifier with LoRA on its attention projections and a trainable, saved head."""
    from peft import PeftModel

    judges.bert_lora_model(
        publish("bert_lora_model", manifest(need(ns, "lora_model", PeftModel, where="the exercise 2 cell")))
    )
