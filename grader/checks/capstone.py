"""Hidden checks for lab 07 (capstone): the whole QLoRA recipe, trained with the transformers Trainer.

Every check of the QLoRA lab applies unchanged (imported from checks.qlora and checks.adapter_files,
so test cells call `capstone.<check>(globals())` for all of them). Three more are the capstone's own:
the Trainer's mixed-precision flags for the hardware, a validation loss recomputed here from the saved
adapter, and the reload of that adapter for inference onto a fresh base.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel

from checks import fail, judges, need
from checks.adapter_files import ADAPTER_WEIGHTS
from checks.evidence import publish
from checks.inspect_model import base_model
from checks.qlora import (  # noqa: F401 (the capstone's test cells call them through this module)
    MODEL_TYPES,
    adapter_only_saved,
    adapter_trained,
    kbit_prepared,
    loaded_in_4bit,
    lora_config,
    quantization_config,
    trainable_share,
)

VALIDATION = "Check the trained adapter on held-out data: the validation loss must clearly fall"
RELOAD = "For inference: load the saved adapter onto a fresh base model with PeftModel.from_pretrained"

# The saved adapter must cut the base model's validation loss by at least this share. The reference
# (20 steps of 4 examples) cuts it by about 20% on the tiny model; one step cuts it by about 4%.
MIN_IMPROVEMENT = 0.10


def precision_flags(ns: dict) -> None:
    """The TrainingArguments the Trainer really used set fp16/bf16 exactly as the hardware needs."""
    from transformers import Trainer, TrainingArguments

    trainer = ns.get("trainer")
    args = trainer.args if isinstance(trainer, Trainer) else need(ns, "training_args", TrainingArguments)
    judges.precision_flags(publish("precision_flags", {"fp16": bool(args.fp16), "bf16": bool(args.bf16)}))


def _validation_texts(tokenizer) -> list[str]:
    from labutils.data import format_instruction, load_instructions

    return [format_instruction(row, tokenizer.eos_token) for row in load_instructions()["validation"]]


@torch.no_grad()
def validation_loss(model, tokenizer, texts: list[str], batch_size: int = 20) -> float:
    """Mean cross-entropy per predicted token (nats) over `texts`, padding excluded."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size], return_tensors="pt", padding=True, padding_side="right"
        ).to(model.device)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        tokens = int((labels[:, 1:] != -100).sum())
        total += model(**batch, labels=labels).loss.item() * tokens
        count += tokens
    return total / count


def _load_base(model_id: str):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, judges.expected_compute_dtype()),
    )
    # float32 for the layers that stay unquantized (norms, embeddings, head), as after preparation.
    return AutoModelForCausalLM.from_pretrained(
        model_id, quantization_config=config, device_map="auto", dtype=torch.float32
    )


def validation_improved(ns: dict) -> None:
    """The adapter saved in ADAPTER_DIR, loaded here onto a fresh 4-bit base, clearly lowers validation loss.

    Recomputed from the files (not from the notebook's printed or stored numbers): the same base with
    the adapter disabled is the untrained reference.
    """
    from transformers import AutoTokenizer

    import labutils

    adapter_dir = Path(need(ns, "ADAPTER_DIR", (str, Path)))
    if not (adapter_dir / "adapter_config.json").exists():
        fail(
            VALIDATION,
            f"{adapter_dir} holds no adapter (no adapter_config.json), so there is nothing to evaluate.",
            "save the trained adapter with trainer.save_model(ADAPTER_DIR) or model.save_pretrained(ADAPTER_DIR).",
        )
    model_id = labutils.course_model("causal_lm")
    tokenizer = AutoTokenizer.from_pretrained(model_id)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = _validation_texts(tokenizer)
    try:
        adapted = PeftModel.from_pretrained(_load_base(model_id), adapter_dir)
    except Exception as err:  # a broken or foreign adapter folder
        fail(
            VALIDATION,
            f"the adapter in {adapter_dir} does not load onto the course model ({type(err).__name__}: {err}).",
            "save the trained PeftModel's adapter with trainer.save_model(ADAPTER_DIR).",
        )
    after = validation_loss(adapted, tokenizer, texts)
    with adapted.disable_adapter():
        before = validation_loss(adapted, tokenizer, texts)
    del adapted
    drop = (before - after) / before
    if drop < MIN_IMPROVEMENT:
        fail(
            VALIDATION,
            f"on the validation split the saved adapter takes the loss from {before:.3f} to {after:.3f} "
            f"({drop:.1%} lower); a trained adapter should cut it by at least {MIN_IMPROVEMENT:.0%}. "
            "Too few steps (or a learning rate too small) leave the adapter close to untrained.",
            "train for the step budget the exercise gives (max_steps=20, learning_rate=5e-3), then save.",
        )


def _adapter_state(model) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    name = model.active_adapter
    name = name[0] if isinstance(name, (list, tuple)) else name
    return get_peft_model_state_dict(model, adapter_name=name)


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
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.exists():
        fail(RELOAD, f"{adapter_dir} holds no {ADAPTER_WEIGHTS} to load.", "save the adapter first.")
    saved = load_file(str(weights))
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
