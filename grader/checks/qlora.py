"""Hidden checks for lab 04 (QLoRA), one per correction-guide rule.

They read the objects the learner's cells produced (`bnb_config`, `model`) and the files in
`ADAPTER_DIR` / `OUTPUT_DIR`, never the learner's printed output.
"""

from __future__ import annotations

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from checks import QLORA_CONFIG, TRAINABLE_SHARE, fail, need
from checks.adapter_files import adapter_only_saved, adapter_trained  # noqa: F401 (test cells call them here)
from checks.inspect_model import (
    base_model,
    is_peft_model,
    leaf,
    linear4bit_layers,
    linear8bit_layers,
    require_adapters_on,
    require_lora_model,
    unprepared_parameters,
)

# A real transformers model or its PEFT wrapper: a look-alike object cannot stand in for one.
MODEL_TYPES = (PreTrainedModel, PeftModel)
LLAMA_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
LLAMA_MLP = ("gate_proj", "up_proj", "down_proj")
BERT_NAMES = ("query", "key", "value")
LLAMA_FIX = "target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj'] for Llama (query/key/value is BERT)."
RANK_RANGE = (8, 16)  # the guide: "8-16 for most tasks"; this lab's instruction task is a simple one


def expected_compute_dtype() -> torch.dtype:
    """The right compute dtype for the hardware grading runs on (bf16, or fp16 on a GPU without bf16)."""
    from labutils.doctor import detect_hardware, recommended_compute_dtype

    hw = detect_hardware()
    return recommended_compute_dtype(hw["cuda_available"], hw["bf16_supported"])


def _dtype(value) -> torch.dtype | None:
    if isinstance(value, str):
        value = getattr(torch, value.removeprefix("torch."), None)
    return value if isinstance(value, torch.dtype) else None


def _name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def quantization_config(ns: dict) -> None:
    """The learner's BitsAndBytesConfig asks for 4-bit NF4, double quant and the hardware's compute dtype."""
    from transformers import BitsAndBytesConfig

    cfg = need(ns, "bnb_config", BitsAndBytesConfig)
    if cfg.load_in_8bit:
        fail(
            QLORA_CONFIG,
            "bnb_config loads the model in 8-bit (LLM.int8), which is not QLoRA.",
            "use load_in_4bit=True with bnb_4bit_quant_type='nf4'.",
        )
    if not cfg.load_in_4bit:
        fail(
            QLORA_CONFIG,
            "bnb_config does not set load_in_4bit=True.",
            "BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4', ...).",
        )
    if cfg.bnb_4bit_quant_type != "nf4":
        fail(
            QLORA_CONFIG,
            f"bnb_4bit_quant_type is {cfg.bnb_4bit_quant_type!r}: FP4 spends its 16 levels "
            "evenly, NF4 places them where normally distributed weights are.",
            "bnb_4bit_quant_type='nf4' (lower case).",
        )
    if not cfg.bnb_4bit_use_double_quant:
        fail(
            QLORA_CONFIG,
            "double quantization is off, so every 64 weights keep a 32-bit scale "
            "(0.5 bits per weight instead of 0.127).",
            "bnb_4bit_use_double_quant=True.",
        )
    want, got = expected_compute_dtype(), _dtype(cfg.bnb_4bit_compute_dtype)
    if got != want:
        fail(
            QLORA_CONFIG,
            f"bnb_4bit_compute_dtype is {_name(got)}; on this hardware it should be "
            f"{_name(want)} (bf16 where supported, float16 on a GPU without bf16 such as a T4; float32 "
            "doubles activation memory and is slow).",
            f"bnb_4bit_compute_dtype=torch.{_name(want)}.",
        )


def loaded_in_4bit(ns: dict) -> None:
    """The model really was loaded through the config: its linear layers are NF4 double-quant Linear4bit."""
    model = need(ns, "model", MODEL_TYPES, where="the loading cell")
    layers = linear4bit_layers(model)
    if not layers:
        if linear8bit_layers(model):
            fail(
                QLORA_CONFIG,
                "the model's layers are 8-bit (Linear8bitLt), not 4-bit.",
                "load with the 4-bit NF4 bnb_config.",
            )
        fail(
            QLORA_CONFIG,
            "the loaded model has no 4-bit (Linear4bit) layers: the quantization config "
            "was built but never used.",
            "AutoModelForCausalLM.from_pretrained(MODEL, quantization_config=bnb_config, device_map='auto').",
        )
    want = expected_compute_dtype()
    for name, layer in layers.items():
        weight = layer.weight
        if weight.quant_type != "nf4":
            fail(
                QLORA_CONFIG,
                f"{name} is stored as {weight.quant_type}, not nf4.",
                "load with bnb_4bit_quant_type='nf4'.",
            )
        if not (weight.quant_state and weight.quant_state.nested):
            fail(
                QLORA_CONFIG,
                f"{name} was loaded without double quantization.",
                "load with bnb_4bit_use_double_quant=True.",
            )
        if layer.compute_dtype != want:
            fail(
                QLORA_CONFIG,
                f"{name} computes in {_name(layer.compute_dtype)}, not {_name(want)}.",
                f"load with bnb_4bit_compute_dtype=torch.{_name(want)}.",
            )


def kbit_prepared(ns: dict) -> None:
    """prepare_model_for_kbit_training ran on the 4-bit model (evidence that survives get_peft_model)."""
    model = need(ns, "model", MODEL_TYPES)
    # On a model that is not k-bit (config never passed: its own check's mistake), peft only upcasts;
    # it turns checkpointing on for quantized models alone, so only the upcast is evidence there.
    quantized = bool(linear4bit_layers(model) or linear8bit_layers(model))
    checkpointing = getattr(base_model(model), "is_gradient_checkpointing", False) or not quantized
    left = unprepared_parameters(model)
    if not checkpointing or left:
        found = []
        if not checkpointing:
            found.append("gradient checkpointing is off")
        if left:
            found.append(f"{len(left)} non-quantized parameters are still 16-bit (e.g. {left[0]})")
        fail(
            3,
            "the model was not prepared: " + " and ".join(found) + ". Training still runs and the "
            "loss still falls, so this mistake is silent: norms and embeddings train in 16-bit and "
            "activations are not checkpointed.",
            "model = prepare_model_for_kbit_training(model) right after loading and BEFORE get_peft_model.",
        )


def lora_config(ns: dict) -> None:
    """LoRA wraps exactly the Llama attention projections, with a sensible rank and alpha = 2r."""
    model = need(ns, "model", MODEL_TYPES)
    require_lora_model(ns, model, "Llama", LLAMA_FIX, foreign=("BERT", BERT_NAMES))
    cfg = model.peft_config["default"]
    wrapped = require_adapters_on(model, LLAMA_ATTENTION, "Llama", LLAMA_FIX)
    stray = sorted(n for n in wrapped if leaf(n) not in LLAMA_ATTENTION + LLAMA_MLP)
    if stray:
        fail(
            1,
            f"LoRA also wraps {', '.join(stray)}, which are not attention or MLP projections.",
            "target only q_proj, k_proj, v_proj, o_proj (optionally the MLP projections).",
        )
    low, high = RANK_RANGE
    if not low <= cfg.r <= high:
        size = "too high: it multiplies trainable parameters and memory" if cfg.r > high else "too low"
        fail(
            2,
            f"r={cfg.r} is {size} for a simple instruction task.",
            f"r between {low} and {high} (the guide: 8-16 for most tasks, 32-64 only for complex ones).",
        )
    if cfg.lora_alpha != 2 * cfg.r:
        fail(
            2,
            f"lora_alpha={cfg.lora_alpha} with r={cfg.r}: the update is scaled by alpha/r = "
            f"{cfg.lora_alpha / cfg.r:g}.",
            f"lora_alpha = 2 * r = {2 * cfg.r}.",
        )
    if cfg.task_type != "CAUSAL_LM":  # TaskType is a str enum: equal to its text
        fail(1, f"task_type is {cfg.task_type!r}.", "task_type='CAUSAL_LM' (or TaskType.CAUSAL_LM).")
    if cfg.bias != "none":
        fail(TRAINABLE_SHARE, f"bias={cfg.bias!r} also trains base-model biases.", "bias='none'.")
    if not 0.0 <= cfg.lora_dropout <= 0.1:
        fail(2, f"lora_dropout={cfg.lora_dropout} is outside 0-0.1.", "lora_dropout=0.05.")


def trainable_share(ns: dict) -> None:
    """Only LoRA weights train, and they are well under 1% of the model (peft's own counter)."""
    model = need(ns, "model", MODEL_TYPES)
    if not is_peft_model(model):
        fail(TRAINABLE_SHARE, "`model` is not a PeftModel.", "model = get_peft_model(model, lora_config).")
    trainable, total = model.get_nb_trainable_parameters()
    if trainable == 0:
        fail(
            3,
            "no parameter is trainable: prepare_model_for_kbit_training was called after "
            "get_peft_model and froze the LoRA weights.",
            "call prepare_model_for_kbit_training before get_peft_model.",
        )
    others = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    if others:
        fail(
            TRAINABLE_SHARE,
            f"{len(others)} base-model parameters are trainable (e.g. {others[0]}).",
            "leave the freezing to get_peft_model; do not set requires_grad on base weights.",
        )
    share = 100 * trainable / total
    if share >= 1.0:
        fail(
            TRAINABLE_SHARE,
            f"{share:.2f}% of parameters train; LoRA should train well under 1%.",
            "use r=16 on the attention projections; check print_trainable_parameters().",
        )
