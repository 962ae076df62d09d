"""Lab 09's checks of what it saved, read from disk and decided again outside the kernel (OUTSIDE).

adapter_saved reads the folder with the standard library only. generation_stops loads the saved adapter and
tokenizer onto a fresh base with torch, here on the grading machine, and generates: whether the model learned
to stop is measured from the learner's files, not from anything the notebook printed.
"""

from __future__ import annotations

import json
from pathlib import Path

from checks import TRAINED_ADAPTER, error_text, fail
from checks.adapter_files import (
    ADAPTER_WEIGHTS,
    adapter_folder,
    adapter_only_saved,
    safetensors_header,
    saved_adapter_dir,
)
from checks.lab09_chat_sft import judges

ADAPTER_TENSOR_MARKS = ("lora_", "trainable_tokens")  # LoRA matrices and the new tokens' trained rows
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


def _tokenizer_state(adapter_dir: Path) -> tuple[bool, bool]:
    """Whether a tokenizer that knows both role markers is saved there, and whether it has a chat template."""
    texts = [
        (adapter_dir / name).read_text(errors="replace")
        for name in TOKENIZER_FILES
        if (adapter_dir / name).is_file()
    ]
    knows = bool(texts) and all(any(m in t for t in texts) for m in judges.CHAT_MARKERS)
    template = (adapter_dir / "chat_template.jinja").is_file() or (
        adapter_dir / "chat_template.json"
    ).is_file()
    config = adapter_dir / "tokenizer_config.json"
    if not template and config.is_file():
        try:
            template = bool(json.loads(config.read_text()).get("chat_template"))
        except (json.JSONDecodeError, AttributeError):
            template = False
    return knows, template


def adapter_saved(ns: dict) -> None:
    """ADAPTER_DIR holds LoRA tensors and the new tokens' rows only (no whole layer), nothing else but the
    tokenizer beside it, and that tokenizer has the markers and the chat template."""
    adapter_dir = adapter_folder(ns)
    weights = adapter_dir / ADAPTER_WEIGHTS
    header = {}
    if weights.is_file():
        try:
            header = safetensors_header(weights)
        except ValueError:
            header = {}
    whole = sorted(k for k in header if not any(mark in k for mark in ADAPTER_TENSOR_MARKS))
    knows, template = _tokenizer_state(adapter_dir)
    record = {
        "whole_tensors": whole,
        "adapter_mb": weights.stat().st_size / 2**20 if weights.is_file() else 0.0,
        "tokenizer_saved": knows,
        "template_saved": template,
    }
    if not whole:  # whole layers get their own message; else Mistake 4's checks of folder and files first
        adapter_only_saved(ns, allowed=ADAPTER_TENSOR_MARKS)
    judges.chat_adapter_files(record)


def base_for(model_id: str, tokenizer):
    """A fresh fp32 base with an embedding row for every token of `tokenizer`, as the lab's fresh_base() makes it."""
    import torch
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.float32)
    if len(tokenizer) > base.get_input_embeddings().num_embeddings:  # no spare rows for the new tokens
        base.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    return base


VALIDATION_PROMPTS = 10
MAX_NEW_TOKENS = 16


def generation_stops(ns: dict) -> None:
    """The adapter and tokenizer saved in ADAPTER_DIR, on a fresh fp32 base: greedy answers to validation
    prompts end with EOS, and EOS is the top prediction after the reference replies."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    import labutils
    from labutils.data import load_instructions

    adapter_dir = saved_adapter_dir(
        ns,
        TRAINED_ADAPTER,
        "{adapter_dir} holds no adapter (no adapter_config.json): there is no model to generate with.",
        "trainer.model.save_pretrained(ADAPTER_DIR) and tokenizer.save_pretrained(ADAPTER_DIR).",
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
        if not tokenizer.chat_template:
            raise ValueError("it has no chat template")
    except Exception as err:  # noqa: BLE001 - no usable tokenizer is the verdict
        fail(
            judges.TOKENS_RULE,
            f"the tokenizer saved in {adapter_dir} cannot render a chat ({type(err).__name__}: "
            f"{(error_text(err).splitlines() or [''])[0][:120]}).",
            "tokenizer.save_pretrained(ADAPTER_DIR) after setting its chat template.",
        )
    model = PeftModel.from_pretrained(
        base_for(labutils.course_model("causal_lm"), tokenizer), adapter_dir
    ).eval()
    eos = tokenizer.eos_token_id
    examples = list(load_instructions()["validation"])
    stopped, example, eos_after = 0, "", 0
    with torch.no_grad():
        for k, item in enumerate(examples):
            user = [{"role": "user", "content": item["instruction"]}]
            prompt = tokenizer.apply_chat_template(
                user, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            if k < VALIDATION_PROMPTS:
                out = model.generate(
                    **prompt,
                    max_new_tokens=MAX_NEW_TOKENS,
                    do_sample=False,
                    eos_token_id=eos,
                    pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
                )[0, prompt["input_ids"].shape[1] :]
                if eos in out.tolist():
                    stopped += 1
                elif not example:
                    example = tokenizer.decode(out)[:60]
            reply = tokenizer(item["response"], add_special_tokens=False, return_tensors="pt")["input_ids"]
            ids = torch.cat([prompt["input_ids"], reply], dim=1)
            eos_after += int(model(input_ids=ids).logits[0, -1].argmax().item() == eos)
    record = {
        "prompts": VALIDATION_PROMPTS,
        "stopped": stopped,
        "example": example,
        "max_new_tokens": MAX_NEW_TOKENS,
        "replies": len(examples),
        "eos_after_reply": eos_after,
    }
    judges.chat_stops(record)
