"""Lab 06's judges: the LoRA config on BERT and the classification head in modules_to_save, from the model's
manifest (checks.inspect_model); the lab's rule titles.
"""

from __future__ import annotations

import re

from checks import fail
from checks.inspect_model import active_config, config_as_asked, require_adapters_on, require_lora_model
from labutils.facts import ATTENTION, BERT_ATTENTION, LLAMA_NAMES

# Rules of this lab that are not among the guide's five numbered mistakes.
TRAIN_HEAD = "Train the adapter and the head before saving"
BEATS_CHANCE = "A trained classifier beats chance on held-out data"
RELOAD_SAME = "A saved adapter reloads onto a fresh base with identical predictions"

# What transformers calls a sequence-classification head: BERT/RoBERTa `classifier`, decoder models `score`.
HEAD_NAMES = ("classifier", "score")
SAVE_HEAD_FIX = (
    "task_type='SEQ_CLS' (or TaskType.SEQ_CLS), which adds the head to modules_to_save, or "
    "modules_to_save=['classifier']; then model.save_pretrained(ADAPTER_DIR) saves it with the adapter."
)


# BERT's attention projections, one rule for labs 02 and 06 (labutils.facts): query, key and value required,
# the attention output optional; the other `dense` layers are the MLP and the pooler.
BERT = ATTENTION["bert"]
BERT_FIX = (
    "target_modules=['query', 'key', 'value'] for BERT (q_proj/k_proj/v_proj are Llama's names; "
    "attention.output.dense is optional)."
)


def _head_name(record: dict) -> str:
    """The attribute name of the classification head, from a manifest."""
    for name in HEAD_NAMES:
        if name in record["base_children"]:
            return name
    fail(
        5,
        f"{record['type'].rsplit('.', 1)[-1]} has no classification head (no `classifier` or `score`).",
        "load the model with AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=...).",
    )


def bert_lora_config(record: dict) -> None:
    """`model` is a PeftModel whose LoRA layers (r=8, alpha=16) sit on BERT's query, key and value projections
    (its attention output optional) and nowhere else."""
    require_lora_model(record, "BERT", BERT_FIX, foreign=("Llama", LLAMA_NAMES))
    wrapped = require_adapters_on(record, BERT_ATTENTION, "BERT", BERT_FIX)
    head_name = _head_name(record)
    on_head = sorted(n for n in wrapped if head_name in n.split("."))
    if on_head:
        fail(
            5,
            f"LoRA wraps the head ({on_head[0]}): a low-rank update on a random head is not a trained head, and "
            "the random base head is not saved with the adapter.",
            "train the head whole: " + SAVE_HEAD_FIX,
        )
    stray = sorted(n for n in wrapped if not re.fullmatch(f"{BERT.required}|{BERT.optional}", n))
    if stray:
        fail(
            1,
            f"LoRA also wraps {', '.join(stray[:3])}, which are not BERT's attention projections (a `dense` "
            "outside attention.output is the MLP or the pooler).",
            BERT_FIX,
        )
    config_as_asked(active_config(record), "lora_config", 8, 16)


def head_wrapped(record: dict) -> None:
    """The classification head is in modules_to_save: wrapped, with a trainable copy."""
    if not record["peft"]:
        fail(5, "`model` is not a PeftModel, so nothing decides what happens to the head.", SAVE_HEAD_FIX)
    name = _head_name(record)
    head = record["base_prefix"] + name
    if record["modules"].get(head) != "modules_to_save":
        task = active_config(record).get("task_type")
        why = (
            f"task_type={task!r} adds no head to modules_to_save"
            if task and task != "SEQ_CLS"
            else "the config sets no task_type and no modules_to_save"
        )
        fail(
            5,
            f"the classification head `{name}` is not in modules_to_save ({why}). get_peft_model froze it: "
            "it stays random, is not saved with the adapter, and a reload gets a different random head.",
            SAVE_HEAD_FIX,
        )
    copies = f"{head}.modules_to_save."
    frozen = [
        n.removeprefix(copies).split(".", 1)[-1]
        for n, (_, grad, _, _) in record["parameters"].items()
        if n.startswith(copies) and not grad
    ]
    if frozen:
        fail(
            5,
            f"the head's trainable copy has frozen parameters ({', '.join(frozen)}).",
            "leave requires_grad as get_peft_model sets it.",
        )
