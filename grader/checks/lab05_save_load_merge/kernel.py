"""Hidden checks for lab 05 (save the adapter, load it, merge only to deploy).

The on-disk checks (adapter folder, deployment folder) live in files.py, standard library only, and
run again outside the kernel. The checks here need torch: they recompute outputs on a
fixed input from the learner's real objects and saved files, never from printed numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from checks import fail, need
from checks.inspect_model import lora_wrapped
from checks.lab05_save_load_merge.files import (  # noqa: F401 (the test cells call them here too)
    DEPLOY_RULE,
    adapter_only_saved,
    deploy_copy_saved,
)

RELOAD_RULE = (
    "For inference, load the saved adapter onto a fresh base: PeftModel.from_pretrained(base, ADAPTER_DIR)"
)
# Same weights, same input, eval mode: the logits are bit-identical on one machine (0.0 on a CPU);
# the slack only absorbs GPU kernels that may pick another reduction order.
RELOAD_ATOL = 1e-4
# The reloaded model is judged bit for bit against the trained one only where they share a machine.
MERGE_RTOL = 0.02  # above it, a reload difference means another adapter; below, another precision


def probe_logits(model) -> torch.Tensor:
    """Logits on a fixed token sequence (no tokenizer involved), eval mode, float32 on the CPU."""
    vocab = model.get_input_embeddings().num_embeddings
    ids = (torch.arange(24) * 7919 + 11).remainder(vocab - 3).add(3).unsqueeze(0)
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device))
    return out.logits.float().cpu()


def _trained_model(ns: dict) -> PeftModel:
    return need(ns, "model", PeftModel, where="the training cell (run it again)")


def _storage(model) -> set[int]:
    return {p.data_ptr() for p in model.parameters() if p.numel()}


def reload_equal(ns: dict) -> None:
    """`reloaded` is the saved adapter on a fresh base and gives the trained model's outputs exactly."""
    model = _trained_model(ns)
    reloaded = need(ns, "reloaded", (PeftModel, PreTrainedModel), where="the reload exercise cell")
    if not isinstance(reloaded, PeftModel):
        fail(
            RELOAD_RULE,
            f"`reloaded` is a plain {type(reloaded).__name__} without the adapter (or with it merged in).",
            "reloaded = PeftModel.from_pretrained(fresh_base, ADAPTER_DIR), on a freshly loaded base.",
        )
    if reloaded is model or _storage(reloaded) & _storage(model):
        fail(
            RELOAD_RULE,
            "`reloaded` shares its weights with the trained `model`, so comparing them proves nothing "
            "about what was saved.",
            "load a fresh base with AutoModelForCausalLM.from_pretrained(MODEL, dtype=DTYPE), then "
            "PeftModel.from_pretrained(fresh_base, ADAPTER_DIR).",
        )
    lora_b = [p for n, p in reloaded.named_parameters() if "lora_B" in n]
    if lora_b and not any(bool(torch.count_nonzero(p)) for p in lora_b):
        fail(
            RELOAD_RULE,
            "`reloaded` carries a NEW, untrained adapter: every lora_B is zero, so it computes the bare base "
            "model. get_peft_model creates adapters; it does not load the saved one.",
            "reloaded = PeftModel.from_pretrained(fresh_base, ADAPTER_DIR) (or "
            "AutoPeftModelForCausalLM.from_pretrained(ADAPTER_DIR)).",
        )
    expected, got = probe_logits(model), probe_logits(reloaded)
    if expected.shape != got.shape:
        fail(
            RELOAD_RULE,
            f"logit shapes differ: {tuple(expected.shape)} vs {tuple(got.shape)}.",
            "reload MODEL.",
        )
    diff = (expected - got).abs().max().item()
    if diff > RELOAD_ATOL:
        scale = expected.abs().max().item()
        why = (
            "the base was loaded in another precision than the trained model's (dtype=DTYPE)"
            if diff < MERGE_RTOL * scale
            else "this is not the saved adapter on the same base"
        )
        fail(
            RELOAD_RULE,
            f"on a fixed input the reloaded model's logits differ from the trained model's by up to {diff:.3g} "
            f"(must be identical, at most {RELOAD_ATOL:g}): {why}.",
            "AutoModelForCausalLM.from_pretrained(MODEL, dtype=DTYPE), then "
            "PeftModel.from_pretrained(fresh_base, ADAPTER_DIR).",
        )


def _is_quantized(model) -> bool:
    return getattr(model.config, "quantization_config", None) is not None or bool(
        getattr(model, "is_quantized", False)
    )


def merged_outputs(ns: dict) -> None:
    """`merged` is a plain 16-bit model and DEPLOY_DIR holds a loadable, unquantized copy of it.

    Whether that copy is the trained adapter merged in is decided outside the kernel
    (files.deploy_matches_adapter), against the grader's own merge of ADAPTER_DIR."""
    _trained_model(ns)
    merged = need(ns, "merged", (PeftModel, PreTrainedModel), where="the deployment exercise cell")
    if isinstance(merged, PeftModel) or lora_wrapped(merged):
        fail(
            DEPLOY_RULE,
            "`merged` still carries LoRA layers: the adapter was not merged.",
            "merged = PeftModel.from_pretrained(base, ADAPTER_DIR).merge_and_unload().",
        )
    if _is_quantized(merged):
        fail(
            DEPLOY_RULE,
            "`merged` was merged into a quantized (4-bit or 8-bit) base, which re-quantizes the merged weights "
            "and loses precision.",
            "merge into a base loaded with dtype=torch.bfloat16 and no quantization_config.",
        )
    deploy_dir = Path(need(ns, "DEPLOY_DIR", (str, Path), where="the set-up cell"))
    config = deploy_dir / "config.json"
    if not config.exists():
        fail(DEPLOY_RULE, f"{deploy_dir} holds no saved model.", "merged.save_pretrained(DEPLOY_DIR).")
    if json.loads(config.read_text()).get("quantization_config"):
        fail(
            DEPLOY_RULE,
            f"the model saved in {deploy_dir} is quantized.",
            "save a merge made on a 16-bit base: merged.save_pretrained(DEPLOY_DIR).",
        )
    # Whether the copy computes what the trained adapter computes is decided outside the kernel, against
    # a merge the grader makes itself (files.deploy_matches_adapter): like with like, on any CPU.
