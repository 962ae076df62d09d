"""Lab 07's judges: the capstone puts labs 01-06 together, so it is judged by lab 04's QLoRA rules and by the
Trainer's precision for the hardware (checks.hardware); its own judge reads the labels of a batch the Trainer's
collator built (is the EOS labelled?). Its other verdicts read files (files.py).
"""

from __future__ import annotations

from checks import fail
from checks.hardware import precision_flags
from checks.lab04_qlora.judges import (
    kbit_prepared,
    llama_lora_config,
    loaded_in_4bit,
    quantization_config,
    trainable_share,
)

__all__ = [
    "eos_labelled",
    "kbit_prepared",
    "llama_lora_config",
    "loaded_in_4bit",
    "precision_flags",
    "quantization_config",
    "trainable_share",
]

PAD_RULE = (
    "A pad token of its own: with pad = EOS the collator masks every EOS, and the model never learns to stop"
)

PAD_FIX = (
    "if tokenizer.pad_token is None or is the EOS, tokenizer.add_special_tokens({'pad_token': '<|pad|>'}); "
    "then model = fit_vocabulary(model) right after loading."
)


def eos_labelled(record: dict) -> None:
    """In a batch the Trainer's own collator built from its own training set (`input_ids`, `attention_mask`,
    `labels` as lists, the `eos_id` and `pad_id`), the EOS that ends each text keeps its label."""
    eos = record["eos_id"]
    rows = record["input_ids"]
    masks = record.get("attention_mask") or [[1] * len(ids) for ids in rows]
    ended = kept = 0
    for ids, labels, mask in zip(rows, record["labels"], masks, strict=True):
        ends = [i for i, (token, real) in enumerate(zip(ids, mask, strict=True)) if token == eos and real]
        if ends:
            ended += 1
            kept += all(labels[i] == eos for i in ends)
    if not ended:
        fail(
            PAD_RULE,
            f"none of the {len(rows)} sequences of a training batch holds the EOS (id {eos}): there is nothing "
            "for the model to learn to stop at.",
            "tokenize the texts as the data cell does, format_instruction(row, tokenizer.eos_token), with "
            "the tokenizer the Trainer trains with.",
        )
    if kept < ended:
        cause = (
            f"the pad token is the EOS (id {eos}), and DataCollatorForLanguageModeling sets the label of every "
            "pad-id token to -100"
            if record.get("pad_id") == eos
            else f"the collator masks it (pad id {record.get('pad_id')}, EOS id {eos})"
        )
        fail(
            PAD_RULE,
            f"in a batch the Trainer's collator built, the EOS that ends the text is labelled -100 in "
            f"{ended - kept} of {ended} sequences: {cause}. Every EOS is masked out of the loss, so the model "
            "never learns to stop.",
            PAD_FIX,
        )
