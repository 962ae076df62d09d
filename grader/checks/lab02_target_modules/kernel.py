"""Hidden checks for lab 02 (target modules per architecture).

The learner writes `attention_targets(model)`, returning `target_modules` (a list of names or a
full-match regex string). The checks call it on fresh tiny models of every course architecture, the
three the lab shows and seven it never shows, wrap each with `get_peft_model` and compare the modules
LoRA ACTUALLY wrapped with the architecture's attention projections: every query, key and value
projection (fused or not) in every layer must carry an adapter; the attention output projection may;
nothing else may (no MLP, embeddings, pooler or heads). They never read printed output.
"""

from __future__ import annotations

import warnings

from checks import error_text, fail, need
from checks.evidence import publish
from checks.inspect_model import base_model, lora_wrapped, manifest
from checks.lab02_target_modules import judges
from checks.lab02_target_modules.judges import Report, compare_names, count_of, shown_names
from labutils.facts import ATTENTION

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


def compare(model, wrapped: set[str]) -> Report:
    """Which attention projections of `model` (a PeftModel or plain model) lack an adapter, and what else got one."""
    return compare_names(base_model(model).config.model_type, [n for n, _ in model.named_modules()], wrapped)


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
        found.append(
            f"missed {count_of(report.missed, 'attention projection')}: {shown_names(report.missed)}"
        )
    if report.stray:
        found.append(
            f"also wrapped {count_of(report.stray, 'non-attention module')}: {shown_names(report.stray)}"
        )
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
