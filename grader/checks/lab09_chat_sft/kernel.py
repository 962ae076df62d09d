"""Hidden checks for lab 09 (chat fine-tuning with TRL's SFTTrainer), inside the learner's kernel.

Each reads the real objects: the tokenizer's vocabulary and its rendering of a conversation, lora_config
applied to a fresh base (which rows of which modules train), and the batches the learner's trainer really
builds (its own dataset and collator, whatever route made them). Each turns what it saw into plain data
(checks.evidence) judged by judges.py, in the kernel and again outside it. What the lab saves is judged
from disk (files.py).
"""

from __future__ import annotations

import copy

import torch

from checks import error_text, fail, need, unaltered
from checks.evidence import publish
from checks.inspect_model import CONFIG_FIELDS, peft_model_or_fail
from checks.lab09_chat_sft import judges
from checks.lab09_chat_sft.files import (  # noqa: F401 (the test cells call them here too)
    adapter_saved,
    base_for,
    generation_stops,
)

# A conversation of two exchanges: the template must treat every assistant turn alike.
CONVERSATION = [
    {"role": "user", "content": "Name a primary colour."},
    {"role": "assistant", "content": "red"},
    {"role": "user", "content": "What is 2 plus 2?"},
    {"role": "assistant", "content": "4"},
]
SAMPLE_ROWS = 8  # sequences of the trainer's own training set whose labels are read


def _tokenizer(ns: dict):
    from transformers import PreTrainedTokenizerBase

    return unaltered(need(ns, "tokenizer", PreTrainedTokenizerBase, where="the set-up cell"), "tokenizer")


def _marker(tokenizer, text: str) -> dict:
    pieces = tokenizer.encode(text, add_special_tokens=False)
    special = text in (tokenizer.all_special_tokens or []) or text in getattr(
        tokenizer, "additional_special_tokens", []
    )
    return {"pieces": len(pieces), "special": bool(special)}


def tokens_added(ns: dict) -> None:
    """The role markers are single special tokens, the pad token is not the EOS, new_token_ids are theirs."""
    tokenizer = _tokenizer(ns)
    marker_ids = tokenizer.convert_tokens_to_ids(list(judges.CHAT_MARKERS))
    given = ns.get("new_token_ids")
    try:
        given_ids = sorted(int(i) for i in given) if given is not None else None
    except (TypeError, ValueError):
        given_ids = None
    record = {
        "markers": {m: _marker(tokenizer, m) for m in judges.CHAT_MARKERS},
        "pad_id": tokenizer.pad_token_id,
        "eos_id": tokenizer.eos_token_id,
        "eos_token": tokenizer.eos_token,
        "marker_ids": marker_ids,
        "new_token_ids": given_ids if given_ids is not None else repr(given)[:80],
        "new_ids_match": given_ids is not None and set(marker_ids) <= set(given_ids),
    }
    judges.chat_tokens(publish("chat_tokens", record))


def _render(tokenizer, messages, **kwargs):
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    return list(out["input_ids"]), list(out.get("assistant_masks") or [])


def template_masks(ns: dict) -> None:
    """The assistant mask of a two-exchange conversation, read token by token."""
    tokenizer = _tokenizer(ns)
    record = {"error": "", "turns": 2}
    try:
        ids, mask = _render(tokenizer, CONVERSATION, return_assistant_tokens_mask=True)
        prompt = tokenizer.apply_chat_template(CONVERSATION[:1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(CONVERSATION[:2], tokenize=False)
    except Exception as err:  # noqa: BLE001 - a template that does not render is the verdict
        record["error"] = f"{type(err).__name__}: {error_text(err)[:200]}"
        judges.chat_template_mask(publish("chat_template_mask", record))
        return
    masked = [i for i, m in zip(ids, mask, strict=True) if m]
    masked_text = tokenizer.decode(masked)
    eos = tokenizer.eos_token_id
    prompt_words = [w for turn in CONVERSATION if turn["role"] == "user" for w in turn["content"].split()]
    record |= {
        "markers_used": {m: tokenizer.convert_tokens_to_ids(m) in ids for m in judges.CHAT_MARKERS},
        "masked": len(masked),
        "prompt_masked_in": [w for w in prompt_words if w in masked_text.split()][:3],
        "replies_in_mask": sum(turn["content"] in masked_text for turn in CONVERSATION[1::2]),
        "eos_in_mask": masked.count(eos),
        "eos_rendered": ids.count(eos),
        "generation_prompt": prompt[-40:],
        "generation_prompt_prefix": full.startswith(prompt) and len(full) > len(prompt),
    }
    judges.chat_template_mask(publish("chat_template_mask", record))


def lora_applied(ns: dict) -> None:
    """lora_config on a fresh base: what it wraps, which token rows train, what trains whole."""
    from peft import LoraConfig
    from peft.tuners.lora import LoraLayer
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
    from peft.utils import ModulesToSaveWrapper

    config = need(ns, "lora_config", LoraConfig, where="the exercise cell")
    tokenizer = _tokenizer(ns)
    base = base_for(need(ns, "MODEL", str, where="the set-up cell"), tokenizer)
    model = peft_model_or_fail(base, copy.deepcopy(config), "course's Llama", judges.LLAMA_FIX)
    rows: set[int] = set()  # the input embedding's rows that train
    for module in model.modules():
        if isinstance(module, TrainableTokensLayer) and isinstance(module.base_layer, torch.nn.Embedding):
            for indices in module.token_indices.values():
                rows.update(int(i) for i in indices)
    trainable, total = model.get_nb_trainable_parameters()
    record = {
        "modules_to_save": sorted(config.modules_to_save or []),
        "whole_modules": sorted(n for n, m in model.named_modules() if isinstance(m, ModulesToSaveWrapper)),
        "token_rows": sorted(rows),
        "new_ids": tokenizer.convert_tokens_to_ids(list(judges.CHAT_MARKERS)),
        "lora_leaves": sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, LoraLayer)}
        ),
        "share": trainable / total,
        "config": {k: config.to_dict()[k] for k in CONFIG_FIELDS},
    }
    judges.chat_lora(publish("chat_lora", record))


def labels_masked(ns: dict) -> None:
    """The first sequences of the trainer's training set, collated by its own collator: which positions
    carry labels before and after the last <|assistant|> marker."""
    from transformers import Trainer

    trainer = need(ns, "trainer", Trainer, where="the exercise cell")
    tokenizer = _tokenizer(ns)
    dataset = trainer.train_dataset
    if dataset is None:
        fail(
            judges.LABELS_RULE,
            "the trainer has no training set.",
            "SFTTrainer(..., train_dataset=train_chat).",
        )
    rows = [dataset[i] for i in range(min(SAMPLE_ROWS, len(dataset)))]
    batch = trainer.data_collator(rows) if rows else {}
    marker, eos = tokenizer.convert_tokens_to_ids("<|assistant|>"), tokenizer.eos_token_id
    record = {"examples": len(rows), "no_marker": 0, "prompt_labelled": 0, "eos_missing": 0, "eos_kept": 0}
    record["reply_labelled"] = 0
    for k in range(len(rows)):
        ids, labels = batch["input_ids"][k].tolist(), batch["labels"][k].tolist()
        real = batch["attention_mask"][k].tolist() if "attention_mask" in batch else [1] * len(ids)
        starts = [i for i, t in enumerate(ids) if t == marker and real[i]]
        if not starts:
            record["no_marker"] += 1
            continue
        start = starts[-1]
        record["prompt_labelled"] += any(label != -100 for label in labels[: start + 1])
        ends = [i for i in range(start + 1, len(ids)) if ids[i] == eos and real[i]]
        if not ends:
            record["eos_missing"] += 1
            continue
        record["eos_kept"] += labels[ends[0]] == eos
        record["reply_labelled"] += any(label != -100 for label in labels[start + 1 : ends[0]])
    judges.sft_labels(publish("sft_labels", record))


def precision(ns: dict) -> None:
    """The precision the trainer really runs with, judged as lab 07 judges it."""
    from transformers import Trainer

    trainer = need(ns, "trainer", Trainer, where="the exercise cell")
    args = trainer.args
    judges.precision_flags(publish("precision_flags", {"fp16": bool(args.fp16), "bf16": bool(args.bf16)}))
