"""Lab 04's judges, the guide's QLoRA rules (lab 00 and the capstone judge by them too): the BitsAndBytesConfig,
the loaded 4-bit model, prepare_model_for_kbit_training, the LoRA config and the trainable share, each from
its record (a config's fields, or a model's manifest: checks.inspect_model).
"""

from __future__ import annotations

from checks import QLORA_CONFIG, TRAINABLE_SHARE, fail
from checks.hardware import expected_compute_dtype
from checks.inspect_model import active_config, leaf, require_adapters_on, require_lora_model
from labutils.facts import BERT_ATTENTION, LLAMA_ATTENTION, LLAMA_MLP, RANK_RANGE

HALF_DTYPES = ("float16", "bfloat16")  # dtypes as a record names them


LLAMA_FIX = "target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj'] for Llama (query/key/value is BERT)."


def unprepared(record: dict) -> list[str]:
    """Non-quantized, non-LoRA floating-point base parameters not upcast to fp32 (base-model names).

    prepare_model_for_kbit_training casts them to fp32; the course checkpoints are bf16, so any left
    in bf16/fp16 is evidence that preparation did not happen (peft's own cast).
    """
    prefix = record["base_prefix"]
    return [
        name.removeprefix(prefix)
        for name, (dtype, _grad, _size, four_bit) in record["parameters"].items()
        if not four_bit and "lora_" not in name and "modules_to_save" not in name and dtype in HALF_DTYPES
    ]


def nf4_double_quant(cfg: dict) -> None:
    """The QLoRA storage a BitsAndBytesConfig's fields ask for: 4-bit NF4 with double quantization."""
    if cfg["load_in_8bit"]:
        fail(
            QLORA_CONFIG,
            "bnb_config loads the model in 8-bit (LLM.int8), which is not QLoRA.",
            "use load_in_4bit=True with bnb_4bit_quant_type='nf4'.",
        )
    if not cfg["load_in_4bit"]:
        fail(
            QLORA_CONFIG,
            "bnb_config does not set load_in_4bit=True.",
            "BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4', ...).",
        )
    if cfg["bnb_4bit_quant_type"] != "nf4":
        fail(
            QLORA_CONFIG,
            f"bnb_4bit_quant_type is {cfg['bnb_4bit_quant_type']!r}: FP4 spends its 16 levels "
            "evenly, NF4 places them where normally distributed weights are.",
            "bnb_4bit_quant_type='nf4' (lower case).",
        )
    if not cfg["bnb_4bit_use_double_quant"]:
        fail(
            QLORA_CONFIG,
            "double quantization is off, so every 64 weights keep a 32-bit scale "
            "(0.5 bits per weight instead of 0.127).",
            "bnb_4bit_use_double_quant=True.",
        )


def quantization_config(cfg: dict) -> None:
    """The learner's BitsAndBytesConfig asks for 4-bit NF4, double quant and the hardware's compute dtype; and so
    does the config the model was really loaded with, where the record holds that model's manifest under "model"
    (lab 04's FROM_RECORDS: the model its training loop trained), read from its quantized layers' quant_state, what
    dequantization uses. A config built right but never passed to from_pretrained (no quantized layer) is the
    loading check's mistake alone."""
    nf4_double_quant(cfg)
    want, got = expected_compute_dtype(), str(cfg["bnb_4bit_compute_dtype"]).removeprefix("torch.")
    if got != want:
        fail(
            QLORA_CONFIG,
            f"bnb_4bit_compute_dtype is {got}; on this hardware it should be "
            f"{want} (bf16 where supported, float16 on a GPU without bf16 such as a T4; float32 "
            "doubles activation memory and, on a GPU, runs on its slower fp32 path).",
            f"bnb_4bit_compute_dtype=torch.{want}.",
        )
    loaded = cfg.get("model")
    if isinstance(loaded, dict) and {"linear4bit", "linear8bit"} & set(loaded["modules"].values()):
        loaded_in_4bit(loaded)


def loaded_in_4bit(record: dict) -> None:
    """The model really was loaded through the config: its linear layers are NF4 double-quant Linear4bit."""
    layers = record["linear4bit"]
    if not layers:
        if "linear8bit" in record["modules"].values():
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
        if layer["quant_type"] != "nf4":
            fail(
                QLORA_CONFIG,
                f"{name} is stored as {layer['quant_type']}, not nf4.",
                "load with bnb_4bit_quant_type='nf4'.",
            )
        if not layer["nested"]:
            fail(
                QLORA_CONFIG,
                f"{name} was loaded without double quantization.",
                "load with bnb_4bit_use_double_quant=True.",
            )
        if layer["compute_dtype"] != want:
            fail(
                QLORA_CONFIG,
                f"{name} computes in {layer['compute_dtype']}, not {want}.",
                f"load with bnb_4bit_compute_dtype=torch.{want}.",
            )


def kbit_prepared(record: dict) -> None:
    """prepare_model_for_kbit_training ran on the 4-bit model (evidence that survives get_peft_model)."""
    # On a model that is not k-bit (config never passed: its own check's mistake), peft only upcasts;
    # it turns checkpointing on for quantized models alone, so only the upcast is evidence there.
    quantized = bool({"linear4bit", "linear8bit"} & set(record["modules"].values()))
    checkpointing = record["gradient_checkpointing"] or not quantized
    left = unprepared(record)
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


def llama_lora_config(record: dict) -> None:
    """LoRA wraps exactly the Llama attention projections, with a sensible rank and alpha = 2r."""
    require_lora_model(record, "Llama", LLAMA_FIX, foreign=("BERT", BERT_ATTENTION))
    cfg = active_config(record)
    wrapped = require_adapters_on(record, LLAMA_ATTENTION, "Llama", LLAMA_FIX)
    stray = sorted(n for n in wrapped if leaf(n) not in LLAMA_ATTENTION + LLAMA_MLP)
    if stray:
        fail(
            1,
            f"LoRA also wraps {', '.join(stray)}, which are not attention or MLP projections.",
            "target only q_proj, k_proj, v_proj, o_proj (optionally the MLP projections).",
        )
    low, high = RANK_RANGE
    if not low <= cfg["r"] <= high:
        size = "too high: it multiplies trainable parameters and memory" if cfg["r"] > high else "too low"
        fail(
            2,
            f"r={cfg['r']} is {size} for a simple instruction task.",
            f"r between {low} and {high} (the guide: 8-16 for most tasks, 32-64 only for complex ones).",
        )
    if cfg["lora_alpha"] != 2 * cfg["r"]:
        fail(
            2,
            f"lora_alpha={cfg['lora_alpha']} with r={cfg['r']}: the update is scaled by alpha/r = "
            f"{cfg['lora_alpha'] / cfg['r']:g}.",
            f"lora_alpha = 2 * r = {2 * cfg['r']}.",
        )
    if cfg["task_type"] != "CAUSAL_LM":  # a TaskType enum is recorded as its text
        fail(1, f"task_type is {cfg['task_type']!r}.", "task_type='CAUSAL_LM' (or TaskType.CAUSAL_LM).")
    if cfg["bias"] != "none":
        fail(TRAINABLE_SHARE, f"bias={cfg['bias']!r} also trains base-model biases.", "bias='none'.")
    if not 0.0 <= cfg["lora_dropout"] <= 0.1:
        fail(2, f"lora_dropout={cfg['lora_dropout']} is outside 0-0.1.", "lora_dropout=0.05.")


def trainable_share(record: dict) -> None:
    """Only LoRA weights train, and they are well under 1% of the model (peft's own counter)."""
    if not record["peft"]:
        fail(TRAINABLE_SHARE, "`model` is not a PeftModel.", "model = get_peft_model(model, lora_config).")
    trainable, total = record["trainable_total"]
    if trainable == 0:
        fail(
            3,
            "no parameter is trainable: prepare_model_for_kbit_training was called after "
            "get_peft_model and froze the LoRA weights.",
            "call prepare_model_for_kbit_training before get_peft_model.",
        )
    others = [n for n, (_, grad, _, _) in record["parameters"].items() if grad and "lora_" not in n]
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
