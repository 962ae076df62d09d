"""Hidden checks for lab 07 (capstone): the whole QLoRA recipe, trained with the transformers Trainer.

Every check of the QLoRA lab applies unchanged (lab 04's, imported here, so test cells call
`lab07_checks.<check>(globals())` for all of them). Three more are the capstone's own: the Trainer's
mixed-precision flags for the hardware, the EOS labelled in the batches the Trainer's collator builds (a pad
token that is not the EOS), a validation loss and the exact match of its answers recomputed from the saved
adapter (files.py), and the reload of that adapter for inference onto a fresh base.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel

from checks import fail, need
from checks.adapter_files import ADAPTER_WEIGHTS
from checks.evidence import publish
from checks.inspect_model import _fields, base_model, walk
from checks.lab04_qlora.kernel import (  # noqa: F401 (the capstone's test cells call them through this module)
    MODEL_TYPES,
    kbit_prepared,
    loaded_in_4bit,
    lora_config,
    quantization_config,
    trainable_share,
)
from checks.lab07_capstone import judges
from checks.lab07_capstone.files import (  # noqa: F401 (the test cells call them in the kernel too)
    adapter_only_saved,
    adapter_trained,
    answers_improved,
    validation_improved,
)

BATCH_ROWS = 4  # the first rows of the Trainer's training set, collated as the locked cell show_labels does

RELOAD = "For inference: load the saved adapter onto a fresh base model with PeftModel.from_pretrained"


def precision_flags(ns: dict) -> None:
    """The TrainingArguments the Trainer really used set fp16/bf16 exactly as the hardware needs."""
    from transformers import Trainer, TrainingArguments

    trainer = ns.get("trainer")
    args = trainer.args if isinstance(trainer, Trainer) else need(ns, "training_args", TrainingArguments)
    judges.precision_flags(publish("precision_flags", {"fp16": bool(args.fp16), "bf16": bool(args.bf16)}))


def batch_record(trainer, tokenizer) -> dict:
    """The first rows of the Trainer's own training set, collated by its own collator, as plain lists (what the
    locked cell show_labels binds to `first_batch`, and the kernel guard records right after it)."""
    rows = [trainer.train_dataset[i] for i in range(min(BATCH_ROWS, len(trainer.train_dataset)))]
    record = {key: value.tolist() for key, value in trainer.data_collator(rows).items()}
    return record | {"eos_id": tokenizer.eos_token_id, "pad_id": tokenizer.pad_token_id}


def eos_labelled(ns: dict) -> None:
    """In the batches the learner's Trainer builds, the EOS that ends each text keeps its label (the grader also
    judges the batch the locked cell recorded before training: checks.lab07_capstone.FROM_RECORDS)."""
    from transformers import PreTrainedTokenizerBase, Trainer

    trainer = need(ns, "trainer", Trainer, where="the cell that builds the Trainer")
    tokenizer = need(ns, "tokenizer", PreTrainedTokenizerBase, where="the set-up cell")
    judges.eos_labelled(publish("eos_labelled", batch_record(trainer, tokenizer)))


EMBEDDINGS = ("embed_tokens", "lm_head")  # whole layers peft saves beside the adapter after a resize


def _without_embeddings(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An adapter's tensors without whole embedding layers: a vocabulary resized for a new pad token makes peft
    save them (save_embedding_layers="auto"), and their new row was never trained."""
    return {k: v for k, v in state.items() if k.split(".")[-2:-1] not in ([e] for e in EMBEDDINGS)}


def _adapter_state(model) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    name = model.active_adapter
    name = name[0] if isinstance(name, (list, tuple)) else name
    return _without_embeddings(
        get_peft_model_state_dict(model, adapter_name=name, save_embedding_layers=False)
    )


def _four_bit(model) -> bool:
    """Whether the layers LoRA wraps sit on bitsandbytes 4-bit weights: every adapted layer's `base_layer` is a
    Linear4bit (read from the modules' own tables, by their classes). Not "any 4-bit layer": a stray one added
    beside a full-precision base says nothing about the weights the adapter runs on."""
    import bitsandbytes as bnb

    tables = [dict.get(_fields(m), "_modules") or {} for _, m in walk(model)]
    bases = [dict.get(table, "base_layer") for table in tables if "base_layer" in table]
    return bool(bases) and all(issubclass(type(b), bnb.nn.Linear4bit) for b in bases)


def reloaded_for_inference(ns: dict) -> None:
    """`inference_model` is the saved adapter, loaded with PeftModel.from_pretrained onto a fresh base."""
    from safetensors.torch import load_file

    adapter_dir = Path(need(ns, "ADAPTER_DIR", (str, Path)))
    inference = need(ns, "inference_model", MODEL_TYPES, where="the reload cell")
    if not isinstance(inference, PeftModel):
        fail(
            RELOAD,
            f"`inference_model` is a plain {type(inference).__name__}, not a PeftModel: the adapter was "
            "merged into the weights or never loaded.",
            "inference_model = PeftModel.from_pretrained(fresh_base, ADAPTER_DIR).",
        )
    trained = ns.get("model")
    if inference is trained:
        fail(
            RELOAD,
            "`inference_model` is the model you trained, not a reload: nothing shows that the saved "
            "files alone rebuild it, which is all a deployment will have.",
            "load a fresh base with from_pretrained, then PeftModel.from_pretrained(base, ADAPTER_DIR).",
        )
    if trained is not None and isinstance(trained, MODEL_TYPES):
        shared = {p.data_ptr() for p in base_model(trained).parameters() if p.numel()}
        reused = [n for n, p in inference.named_parameters() if p.numel() and p.data_ptr() in shared]
        if isinstance(base_model(inference), PeftModel) or reused:
            fail(
                RELOAD,
                "the adapter was loaded onto the training model itself (its weights are shared with "
                f"`model`, e.g. {reused[0] if reused else 'the whole PeftModel'}), which already carries "
                "the trained LoRA layers.",
                "base = AutoModelForCausalLM.from_pretrained(MODEL, quantization_config=bnb_config, "
                "device_map='auto'); inference_model = PeftModel.from_pretrained(base, ADAPTER_DIR).",
            )
        if _four_bit(trained) and not _four_bit(inference):
            fail(
                RELOAD,
                "the adapter was trained on a 4-bit base and `inference_model` puts it on a base loaded without "
                "quantization_config: the deployment is another model than the one trained (other weights, several "
                "times the memory), and the one the exercise asks for is the 4-bit base.",
                "base = AutoModelForCausalLM.from_pretrained(MODEL, quantization_config=bnb_config, "
                "device_map='auto'), then PeftModel.from_pretrained(base, ADAPTER_DIR).",
            )
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.exists():
        fail(RELOAD, f"{adapter_dir} holds no {ADAPTER_WEIGHTS} to load.", "save the adapter first.")
    saved = _without_embeddings(load_file(str(weights)))
    loaded = _adapter_state(inference)
    if set(saved) != set(loaded) or any(
        not torch.allclose(saved[k].float().cpu(), loaded[k].detach().float().cpu()) for k in saved
    ):
        fail(
            RELOAD,
            f"the adapter inside `inference_model` is not the one saved in {adapter_dir} (a new, untrained "
            "adapter, or another folder).",
            "inference_model = PeftModel.from_pretrained(base, ADAPTER_DIR).",
        )
