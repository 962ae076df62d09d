"""Lab 07's checks of what the capstone saved, run in the kernel and again outside it (checks.outside) on the
lab's folders: the adapter folder (lab 04's rules, checks.adapter_files) and the validation loss, recomputed
from the saved adapter on a fresh 4-bit base. torch is imported only where a check loads the model.
"""

from __future__ import annotations

from checks import fail
from checks.adapter_files import adapter_only_saved, adapter_trained, saved_adapter_dir
from checks.hardware import expected_compute_dtype

__all__ = ["adapter_only_saved", "adapter_trained", "validation_improved"]

VALIDATION = "Check the trained adapter on held-out data: the validation loss must clearly fall"
# The saved adapter must cut the base model's validation loss by at least this share. The reference
# (20 steps of 4 examples) cuts it by about 20% on the tiny model; one step cuts it by about 4%.
MIN_IMPROVEMENT = 0.10


def _validation_texts(tokenizer) -> list[str]:
    from labutils.data import format_instruction, load_instructions

    return [format_instruction(row, tokenizer.eos_token) for row in load_instructions()["validation"]]


def validation_loss(model, tokenizer, texts: list[str], batch_size: int = 20) -> float:
    """Mean cross-entropy per predicted token (nats) over `texts`, padding excluded."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
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
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, expected_compute_dtype()),
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
    from peft import PeftModel
    from transformers import AutoTokenizer

    import labutils

    adapter_dir = saved_adapter_dir(
        ns,
        VALIDATION,
        "{adapter_dir} holds no adapter (no adapter_config.json), so there is nothing to evaluate.",
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
