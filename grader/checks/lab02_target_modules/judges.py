"""Lab 02's judges: which modules LoRA wrapped against an architecture's attention projections (labutils.facts.ATTENTION),
and the BERT classifier's LoRA model from its manifest.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from checks import fail
from checks.inspect_model import active_config, config_as_asked, leaf, lora_names
from labutils.facts import ATTENTION


def _pattern(name: str) -> str:
    """A module name with layer numbers folded: base_model.model.model.layers.0.mlp.up_proj -> model.layers.N.mlp.up_proj."""
    return re.sub(r"\.\d+(?=\.|$)", ".N", name.removeprefix("base_model.model."))


def shown_names(names, most: int = 2) -> str:
    counts = sorted(Counter(_pattern(n) for n in names).items())
    shown = ", ".join(f"{p} (x{c})" if c > 1 else p for p, c in counts[:most])
    return shown + (f" and {len(counts) - most} more" if len(counts) > most else "")


def count_of(names, what: str) -> str:
    return f"{len(names)} {what}" + ("" if len(names) == 1 else "s")


@dataclass
class Report:
    wrapped: set[str]
    missed: list[str]
    stray: list[str]


def compare_names(model_type: str, names: list[str], wrapped: set[str]) -> Report:
    """compare() from a model's type and module names (a manifest's)."""
    attention = ATTENTION[model_type]
    required = {n for n in names if re.fullmatch(attention.required, n)}
    optional = {n for n in names if re.fullmatch(attention.optional, n)}
    missed = sorted(required - wrapped)
    stray = sorted(n for n in wrapped if n not in required | optional)
    return Report(wrapped, missed, stray)


def bert_lora_model(record: dict) -> None:
    """`lora_model` is the BERT classifier with LoRA (r=8, alpha=16) on its attention projections and a trainable,
    saved head."""
    if record["model_type"] != "bert" or not record["base_type"].endswith("ForSequenceClassification"):
        fail(
            1,
            f"lora_model wraps a {record['base_type']}, not the course's BERT classifier.",
            "lora_model = get_peft_model(bert_model, LoraConfig(..., target_modules=attention_targets(bert_model), "
            "task_type='SEQ_CLS')).",
        )
    report = compare_names(record["model_type"], list(record["modules"]), lora_names(record))
    found = []
    if report.missed:
        found.append(
            f"{count_of(report.missed, 'attention projection')} carry no adapter ({shown_names(report.missed)})"
        )
    if report.stray:
        found.append(
            f"LoRA also wraps {count_of(report.stray, 'non-attention module')} ({shown_names(report.stray)})"
        )
    if found:
        head = any(leaf(n) == "classifier" for n in report.stray)
        fail(
            1,
            "In lora_model " + " and ".join(found) + ".",
            "target BERT's attention projections only: query, key, value (attention.output.dense optional)"
            + (
                "; a new head is trained whole through task_type='SEQ_CLS' (modules_to_save), not given an adapter."
                if head
                else "."
            ),
        )
    heads = [
        n for n, kind in record["modules"].items() if leaf(n) == "classifier" and kind == "modules_to_save"
    ]
    if not heads:
        fail(
            5,
            "the classification head of lora_model is not in modules_to_save: it stays frozen at its random "
            "initialisation and is not saved with the adapter.",
            "LoraConfig(..., task_type='SEQ_CLS') (peft then adds the head to modules_to_save), or "
            "modules_to_save=['classifier'].",
        )
    config_as_asked(active_config(record), "lora_model", 8, 16)
