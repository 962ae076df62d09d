"""Hidden checks for lab 06 (task heads and modules_to_save), one per rule.

They read the objects the learner's cells produced (`lora_config`, `model`, `reloaded`) and the files in
`ADAPTER_DIR`, never printed output. Accuracy and reload predictions are recomputed here on the
validation split, with the course tokenizer, from the real model.
"""

from __future__ import annotations

import torch
from peft import PeftModel

from checks import fail, need
from checks.adapter_files import saved_adapter_dir
from checks.evidence import locked_record, model_record
from checks.inspect_model import base_model, is_peft_model, model_types
from checks.lab06_task_heads import judges
from checks.lab06_task_heads.files import head_saved  # noqa: F401 (the test cell calls it here too)
from checks.lab06_task_heads.judges import BEATS_CHANCE, HEAD_NAMES, RELOAD_SAME, SAVE_HEAD_FIX, TRAIN_HEAD

MODEL_TYPES = model_types()  # checks.inspect_model: one definition
MIN_ACCURACY = 0.7  # two balanced classes: chance is 0.5; a trained tiny BERT reaches about 0.9
MAX_LENGTH = 64  # longer than any validation text, so nothing is truncated


def _head(model) -> tuple[str, torch.nn.Module]:
    """The classification head of the (wrapped) model: its attribute name and the module there."""
    base = base_model(model)
    for name in HEAD_NAMES:
        module = getattr(base, name, None)
        if isinstance(module, torch.nn.Module):
            return name, module
    fail(
        5,
        f"{type(base).__name__} has no classification head (no `classifier` or `score`).",
        "load the model with AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=...).",
    )


def _modules_to_save_wrapper(module) -> bool:
    from peft.utils import ModulesToSaveWrapper

    return isinstance(module, ModulesToSaveWrapper)


def _trainable_copy(wrapper) -> torch.nn.Module:
    copies = wrapper.modules_to_save
    return copies[wrapper.active_adapter] if wrapper.active_adapter in copies else next(iter(copies.values()))


def lora_config(ns: dict) -> None:
    """`model` is a PeftModel whose LoRA layers sit on BERT's query, key and value projections."""
    judges.bert_lora_config(model_record(ns, "bert_lora_config", MODEL_TYPES))


def head_wrapped(ns: dict) -> None:
    """The classification head is in modules_to_save: wrapped, with a trainable copy."""
    judges.head_wrapped(model_record(ns, "head_wrapped", MODEL_TYPES))


def trained(ns: dict) -> None:
    """Training changed the head's trainable copy and at least one LoRA B matrix."""
    model = need(ns, "model", MODEL_TYPES)
    if not is_peft_model(model):
        fail(
            TRAIN_HEAD,
            "`model` is not a PeftModel.",
            "model = get_peft_model(model, lora_config), then train it.",
        )
    name, head = _head(model)
    if not _modules_to_save_wrapper(head):
        fail(
            5,
            f"the head `{name}` was never trained: without modules_to_save it is frozen at its random start.",
            SAVE_HEAD_FIX,
        )
    copy = dict(_trainable_copy(head).named_parameters())
    original = dict(head.original_module.named_parameters())
    if all(torch.equal(copy[n].detach().cpu(), original[n].detach().cpu()) for n in copy if n in original):
        fail(
            TRAIN_HEAD,
            f"the head's trainable copy still equals the head `{name}` the model was loaded with: it was not trained.",
            "run the training cell with epochs > 0 and a learning rate > 0 before saving.",
        )
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    if not any(bool(torch.count_nonzero(p)) for p in lora_b):
        fail(
            TRAIN_HEAD,
            "every lora_B matrix is still zero: the adapter never trained (LoRA starts with B = 0).",
            "train with epochs > 0 and a learning rate > 0.",
        )
    _trained_by_the_loop()


def _trained_by_the_loop() -> None:
    """While graded: the lab's locked training loop changed the adapter's tensors (what the kernel guard recorded just
    before and right after it). Found by red-teaming: a nudge of every trainable tensor before a loop at learning
    rate 0 passed the checks above. A learner's own run records nothing, and passes."""
    start, end = locked_record(LOOP, "start"), locked_record(LOOP, "end")
    if start is None and end is None:
        return
    if not all(isinstance(r, dict) and isinstance(r.get("tensors"), dict) for r in (start, end)):
        fail(
            TRAIN_HEAD,
            "the lab's training loop did not run to its end (or its adapter could not be read), so nothing shows "
            "that it trained the adapter.",
            "run every cell of the notebook in order, from a fresh kernel.",
        )
    if dict(start["tensors"]) == dict(end["tensors"]):
        fail(
            TRAIN_HEAD,
            "the lab's training loop changed none of the adapter's tensors: whatever they hold was not learned there.",
            "run the training cell with epochs > 0 and a learning rate > 0 before saving.",
        )


LOOP = "train_loop"  # the locked training cell (RECORDS_BEFORE and RECORDS in __init__.py)


def _validation(ns: dict):
    """The validation split, tokenized here with the course tokenizer (not the learner's tensors)."""
    from transformers import AutoTokenizer

    from labutils.data import load_sentiment

    tokenizer = AutoTokenizer.from_pretrained(need(ns, "MODEL", str))
    split = load_sentiment()["validation"]
    batch = tokenizer(
        list(split["text"]), padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
    )
    return batch, torch.tensor(list(split["label"]))


@torch.no_grad()
def _logits(model, batch) -> torch.Tensor:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
    model.train(was_training)
    return logits


def accuracy(ns: dict) -> None:
    """Validation accuracy of the trained model, recomputed here, is well above chance."""
    model = need(ns, "model", MODEL_TYPES)
    batch, labels = _validation(ns)
    score = (_logits(model, batch).argmax(-1) == labels).float().mean().item()
    if score < MIN_ACCURACY:
        fail(
            BEATS_CHANCE,
            f"validation accuracy is {score:.0%} (chance is 50%; a trained model here reaches about 90%).",
            "train the adapter and the head (epochs > 0, learning rate about 5e-3) on the training split.",
        )


def _redrawn_head(module: torch.nn.Module) -> None:
    """Draw the head's weights anew, as from_pretrained does for a pretrained checkpoint that has no head."""
    gen = torch.Generator().manual_seed(20260106)
    with torch.no_grad():
        for param in module.parameters():
            fresh = (
                torch.randn(param.shape, generator=gen) * 0.02
                if param.dim() > 1
                else torch.zeros(param.shape)
            )
            param.copy_(fresh.to(param.dtype))


def reload(ns: dict) -> None:
    """The saved adapter, loaded onto a fresh base whose head is new, predicts exactly as the trained model."""
    from transformers import AutoModelForSequenceClassification

    model = need(ns, "model", MODEL_TYPES)
    adapter_dir = saved_adapter_dir(
        ns, RELOAD_SAME, "{adapter_dir} holds no saved adapter.", "model.save_pretrained(ADAPTER_DIR)."
    )
    batch, _ = _validation(ns)
    expected = _logits(model, batch)
    trained_base = base_model(model)
    param = next(trained_base.parameters())
    # A real pretrained checkpoint (bert-base-uncased) has no classifier: every load draws a new random one.
    # The course's tiny checkpoint stores one, which would hide a head missing from the adapter, so the
    # fresh base here gets a head drawn anew: only a head saved in the adapter gives the same predictions.
    base = AutoModelForSequenceClassification.from_pretrained(
        need(ns, "MODEL", str), num_labels=trained_base.config.num_labels, dtype=param.dtype
    ).to(param.device)
    _redrawn_head(_head(base)[1])
    try:
        fresh = PeftModel.from_pretrained(base, adapter_dir)
    except Exception as err:  # noqa: BLE001 (any failure to load is the learner's saved adapter)
        fail(
            RELOAD_SAME,
            f"PeftModel.from_pretrained could not load {adapter_dir} ({type(err).__name__}: {err}).",
            "model.save_pretrained(ADAPTER_DIR) on the trained PeftModel.",
        )
    got = _logits(fresh, batch)
    tolerance = 1e-4 if param.dtype == torch.float32 else 2e-2
    if not torch.allclose(got, expected, atol=tolerance, rtol=tolerance):
        changed = (got.argmax(-1) != expected.argmax(-1)).float().mean().item()
        fail(
            5,
            "reloaded onto a fresh base, the adapter predicts differently "
            f"({changed:.0%} of validation labels change): the trained head is not in the adapter, so the base's "
            "random head takes its place. (The course's tiny checkpoint stores a head, which hides this; a real "
            "checkpoint such as bert-base-uncased has none, and every load draws a new one.)",
            SAVE_HEAD_FIX,
        )
    reloaded = need(ns, "reloaded", PeftModel, where="the reload cell")
    if reloaded is model or base_model(reloaded) is trained_base:
        fail(
            RELOAD_SAME,
            "`reloaded` is the trained model itself, not a reload.",
            "base = AutoModelForSequenceClassification.from_pretrained(MODEL, ...); "
            "reloaded = PeftModel.from_pretrained(base, ADAPTER_DIR).",
        )
    if not torch.equal(_logits(reloaded, batch).argmax(-1), expected.argmax(-1)):
        fail(
            RELOAD_SAME,
            "`reloaded` predicts differently from the trained model.",
            "load a fresh base with the same num_labels and dtype, then PeftModel.from_pretrained(base, ADAPTER_DIR).",
        )
