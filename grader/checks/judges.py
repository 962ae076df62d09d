"""Judges of plain-data records (checks.evidence): each decides one check from what its test cell recorded.

The same function judges in the learner's kernel, right after the record is made, and in a fresh process
outside it (checks.outside), so the two verdicts cannot differ except by tampering. Standard library
only: judging lab 06 outside the kernel loads no torch; the hardware's expected dtypes (labs 04 and 07)
come from labutils.doctor, which loads torch alone. Each judge is named after the record it reads.
A model's record is checks.inspect_model.manifest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection

from checks import QLORA_CONFIG, TRAINABLE_SHARE, fail
from checks.head_files import HEAD_NAMES, SAVE_HEAD_FIX

HALF_DTYPES = ("float16", "bfloat16")  # dtypes as a record names them
LLAMA_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
LLAMA_MLP = ("gate_proj", "up_proj", "down_proj")
LLAMA_NAMES = LLAMA_ATTENTION + LLAMA_MLP
LLAMA_FIX = "target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj'] for Llama (query/key/value is BERT)."
BERT_NAMES = ("query", "key", "value")
BERT_TARGETS = ("query", "value")  # lab 06's targets; key and dense are accepted too
BERT_LINEAR = ("query", "key", "value", "dense")
BERT_FIX = "target_modules=['query', 'value'] for BERT (q_proj/v_proj is Llama)."
RANK_RANGE = (8, 16)  # the guide: "8-16 for most tasks"; the QLoRA labs' instruction task is a simple one
PRECISION = (
    "Mixed precision for the hardware: fp16=True on a GPU without bf16 (T4), bf16=True on Ampere "
    "or newer, neither on a CPU"
)


def leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


HARDWARE_VAR = "PEFT_COURSE_HARDWARE"  # the grading machine's hardware as JSON, set for the outside process


def hardware() -> dict:
    """The grading machine's hardware (labutils.doctor.detect_hardware's cuda_available, bf16_supported
    and device_name): detected here, or as the grader detected it once for a whole class (HARDWARE_VAR),
    which spares each fresh outside process loading torch to ask."""
    known = os.environ.get(HARDWARE_VAR)
    if known:
        return json.loads(known)
    from labutils.doctor import detect_hardware

    return detect_hardware()


def expected_compute_dtype() -> str:
    """The compute dtype for the hardware grading runs on, by name: bfloat16, or float16 on a GPU without bf16."""
    from labutils.doctor import recommended_compute_dtype_name

    hw = hardware()
    return recommended_compute_dtype_name(hw["cuda_available"], hw["bf16_supported"])


def expected_precision() -> dict[str, bool]:
    """The Trainer flags for the hardware grading runs on: {"fp16": ..., "bf16": ...}."""
    hw = hardware()
    if not hw["cuda_available"]:
        return {"fp16": False, "bf16": False}
    return {"fp16": not hw["bf16_supported"], "bf16": bool(hw["bf16_supported"])}


def _where() -> str:
    hw = hardware()
    if not hw["cuda_available"]:
        return "a CPU"
    return f"a GPU {'with' if hw['bf16_supported'] else 'without'} native bf16 ({hw['device_name']})"


def _active_config(record: dict) -> dict:
    """The active adapter's config, from a PeftModel's manifest."""
    active = record["active_adapter"]
    active = active[0] if isinstance(active, list) else active
    return record["peft_config"].get(active) or next(iter(record["peft_config"].values()))


def lora_names(record: dict) -> set[str]:
    """Full names of the modules that carry a LoRA adapter, from a manifest."""
    return {n for n, kind in record["modules"].items() if kind == "lora"}


def unprepared(record: dict) -> list[str]:
    """Non-quantized, non-LoRA floating-point base parameters not upcast to fp32 (base-model names).

    prepare_model_for_kbit_training casts them to fp32; the course checkpoints are bf16, so any left
    in bf16/fp16 is evidence that preparation did not happen (FACTS.md).
    """
    prefix = record["base_prefix"]
    return [
        name.removeprefix(prefix)
        for name, (dtype, _grad, _size, four_bit) in record["parameters"].items()
        if not four_bit and "lora_" not in name and "modules_to_save" not in name and dtype in HALF_DTYPES
    ]


def require_lora_model(
    record: dict, arch: str, fix: str, foreign: tuple[str, Collection[str]] = ("", ())
) -> None:
    """Mistake 1 unless the manifest is a PeftModel's; says so where target_modules match nothing in
    `arch` (and where they are the names of the `foreign` architecture: its name and module names)."""
    if record["peft"]:
        return
    targets = record["lora_config_targets"]
    names = {leaf(n) for n in record["modules"]}
    if targets and not isinstance(targets, str) and not set(targets) & names:
        other = f" (those are {foreign[0]} names)" if set(targets) & set(foreign[1]) else ""
        fail(
            1,
            f"target_modules {sorted(targets)} match no module of this {arch} model{other}, so get_peft_model "
            "raised 'not found in the base model' and nothing was wrapped.",
            fix,
        )
    fail(
        1,
        "`model` is not a PeftModel, so no LoRA adapter is attached.",
        "model = get_peft_model(model, lora_config).",
    )


def require_adapters_on(record: dict, wanted: Collection[str], arch: str, fix: str) -> set[str]:
    """The LoRA-wrapped module names; Mistake 1 if a module named in `wanted` carries no adapter (a
    partly wrong target list is accepted silently)."""
    wrapped = lora_names(record)
    missing = sorted({n for n in record["modules"] if leaf(n) in wanted} - wrapped)
    if missing:
        names = ", ".join(sorted({leaf(n) for n in missing}))
        targets = _active_config(record)["target_modules"]
        fail(
            1,
            f"{len(missing)} {arch} attention projections carry no adapter ({names} missing; target_modules "
            f"was {targets!r}). A partly wrong list is accepted silently.",
            fix,
        )
    return wrapped


def _nf4_double_quant(cfg: dict) -> None:
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
    """The learner's BitsAndBytesConfig asks for 4-bit NF4, double quant and the hardware's compute dtype."""
    _nf4_double_quant(cfg)
    want, got = expected_compute_dtype(), str(cfg["bnb_4bit_compute_dtype"]).removeprefix("torch.")
    if got != want:
        fail(
            QLORA_CONFIG,
            f"bnb_4bit_compute_dtype is {got}; on this hardware it should be "
            f"{want} (bf16 where supported, float16 on a GPU without bf16 such as a T4; float32 "
            "doubles activation memory and is slow).",
            f"bnb_4bit_compute_dtype=torch.{want}.",
        )


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
    require_lora_model(record, "Llama", LLAMA_FIX, foreign=("BERT", BERT_NAMES))
    cfg = _active_config(record)
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
    """`model` is a PeftModel whose LoRA layers sit on BERT's query and value projections."""
    require_lora_model(record, "BERT", BERT_FIX, foreign=("Llama", LLAMA_NAMES))
    wrapped = require_adapters_on(record, BERT_TARGETS, "BERT", BERT_FIX)
    head_name = _head_name(record)
    on_head = sorted(n for n in wrapped if head_name in n.split("."))
    if on_head:
        fail(
            5,
            f"LoRA wraps the head ({on_head[0]}): a low-rank update on a random head is not a trained head, and "
            "the random base head is not saved with the adapter.",
            "train the head whole: " + SAVE_HEAD_FIX,
        )
    stray = sorted(n for n in wrapped if leaf(n) not in BERT_LINEAR)
    if stray:
        fail(
            1,
            f"LoRA also wraps {', '.join(stray[:3])}, which are not BERT's linear projections.",
            "target_modules=['query', 'value'] (key and dense are optional).",
        )


def head_wrapped(record: dict) -> None:
    """The classification head is in modules_to_save: wrapped, with a trainable copy."""
    if not record["peft"]:
        fail(5, "`model` is not a PeftModel, so nothing decides what happens to the head.", SAVE_HEAD_FIX)
    name = _head_name(record)
    head = record["base_prefix"] + name
    if record["modules"].get(head) != "modules_to_save":
        task = _active_config(record).get("task_type")
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


def precision_flags(got: dict) -> None:
    """The TrainingArguments the Trainer really used set fp16/bf16 exactly as the hardware needs."""
    want = expected_precision()
    if got != want:
        shown = ", ".join(f"{k}={v}" for k, v in got.items())
        fix = ", ".join(f"{k}={v}" for k, v in want.items())
        fail(
            PRECISION,
            f"the Trainer ran with {shown} on {_where()}. fp16 autocast on a CPU is accepted silently "
            "and only makes training slower; bf16 is for GPUs that have it natively (Ampere or newer); "
            "a T4 needs fp16.",
            f"{fix} here: choose them from torch.cuda.is_available() and "
            "torch.cuda.is_bf16_supported(including_emulation=False).",
        )


# ---- lab 01: the wrapped course model ------------------------------------------------------------------
EXPECTED_R, EXPECTED_ALPHA = 16, 32  # lab 01 asks for the guide's r=16, alpha=2r


def course_model_wrapped(record: dict) -> None:
    """The course model carries LoRA (r=16, alpha=32) on exactly q/k/v/o_proj."""
    cfg = _active_config(record)
    wrapped = lora_names(record)
    candidates = {n for n in record["modules"] if leaf(n) in LLAMA_ATTENTION}
    missing, stray = sorted(candidates - wrapped), sorted(wrapped - candidates)
    if missing or stray:
        found = []
        if missing:
            names = ", ".join(sorted({leaf(n) for n in missing}))
            found.append(f"{len(missing)} attention projections carry no adapter ({names})")
        if stray:
            found.append(
                f"{len(stray)} other modules are wrapped ({', '.join(sorted({leaf(n) for n in stray}))})"
            )
        fail(
            1,
            "; ".join(found) + f" (target_modules was {cfg['target_modules']!r}).",
            "target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj'] for this Llama-family model.",
        )
    if cfg["r"] != EXPECTED_R or cfg["lora_alpha"] != EXPECTED_ALPHA:
        fail(
            2,
            f"r={cfg['r']}, lora_alpha={cfg['lora_alpha']}: the update is scaled by alpha/r = "
            f"{cfg['lora_alpha'] / cfg['r']:g}; the exercise asks for the guide's r=16, alpha=2r=32.",
            "LoraConfig(r=16, lora_alpha=32, ...).",
        )


def course_model_share(record: dict) -> None:
    """Only LoRA trains (base frozen), well under 1% by peft's counter, and trainable_percent says so."""
    from checks import PeftMistake
    from labutils.profiles import current_profile

    others = [n for n, (_, grad, _, _) in record["parameters"].items() if grad and "lora_" not in n]
    if others:
        fail(
            TRAINABLE_SHARE,
            f"{len(others)} base-model parameters are trainable (e.g. {others[0]}): the base must stay frozen, "
            "only A and B train.",
            "leave the freezing to get_peft_model; do not set requires_grad on base weights.",
        )
    trainable, total = record["trainable_total"]
    if trainable == 0:
        fail(
            TRAINABLE_SHARE,
            "no parameter is trainable, not even the LoRA matrices.",
            "model = get_peft_model(model, lora_config) on a freshly loaded model; do not freeze afterwards.",
        )
    share = 100 * trainable / total
    # The guide's "< 1%" holds for real-sized models and for the tiny course model (0.30%); the hub profile's
    # 135M stand-in has a small hidden size (576), where r=16 on q/k/v/o is about 1.4%: the frozen-base check
    # above is what catches the real mistake there.
    if share >= 1.0 and current_profile() == "tiny":
        fail(
            TRAINABLE_SHARE,
            f"{share:.2f}% of parameters train; LoRA should train well under 1%.",
            "r=16 on the four attention projections; check print_trainable_parameters().",
        )
    given = record["trainable_percent"]
    if not given["defined"]:
        raise PeftMistake(
            "`trainable_percent` is not defined. Fix: define `trainable_percent` in the exercise 2 cell and run it."
        )
    value = given["value"]
    if value is None:
        raise PeftMistake(
            f"`trainable_percent` is a {given['type']}, not a Real. Fix: assign the real object to `trainable_percent`."
        )
    if isinstance(value, bool) or abs(float(value) - share) > 0.01:
        hint = " (that is a fraction, not a percentage)" if abs(100 * float(value) - share) < 0.01 else ""
        fail(
            TRAINABLE_SHARE,
            f"trainable_percent is {value!r}{hint}; peft's own counter says {share:.3f}%.",
            "trainable, total = model.get_nb_trainable_parameters(); trainable_percent = 100 * trainable / total.",
        )


# ---- lab 03: the chosen config --------------------------------------------------------------------------
ALPHA = "LoRA alpha: usually 2x rank (lora_alpha = 2 * r)"
TASK_TYPE = "Correct pattern: task_type='CAUSAL_LM' for a causal language model"


def chosen_rank(cfg: dict) -> None:
    """The chosen rank suits a simple instruction task: 8-16 (the guide's default range)."""
    low, high = RANK_RANGE
    ranks = [cfg["r"], *(cfg["rank_pattern"] or {}).values()]
    if not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in ranks):
        fail(2, f"r={cfg['r']!r} is not a positive integer.", f"an integer r between {low} and {high}.")
    if max(ranks) > 64:
        fail(
            2,
            f"r={max(ranks)} is above 64: the guide says never without a justification, and the sweep shows "
            "what it costs (parameters and adapter memory grow linearly with r).",
            f"r between {low} and {high} for this simple instruction task.",
        )
    if max(ranks) > high:
        fail(
            2,
            f"r={max(ranks)} is too high for this simple instruction task: it multiplies trainable "
            f"parameters and adapter memory (r=64 is {64 // high}x r={high}) for little gain. 32-64 is for "
            "complex tasks with much data.",
            f"r between {low} and {high} (the guide: 8-16 for most tasks).",
        )
    if min(ranks) < low:
        fail(
            2,
            f"r={min(ranks)} is too low: the adapter may lack the capacity to learn the task "
            "(in the sweep, small ranks end with a higher loss on the same budget).",
            f"r between {low} and {high} (the guide: start with 8-16, increase if underfitting).",
        )


def chosen_alpha(cfg: dict) -> None:
    """lora_alpha = 2r, so the update is scaled by alpha/r = 2 whatever the rank."""
    if cfg["use_rslora"]:
        fail(
            ALPHA,
            "use_rslora=True scales the update by alpha/sqrt(r), not alpha/r; this lab uses the plain scaling.",
            "leave use_rslora off and set lora_alpha = 2 * r.",
        )
    pairs = [(cfg["r"], cfg["lora_alpha"])]
    for key, r in (cfg["rank_pattern"] or {}).items():
        pairs.append((r, (cfg["alpha_pattern"] or {}).get(key, cfg["lora_alpha"])))
    for r, alpha in pairs:
        if alpha != 2 * r:
            fail(
                ALPHA,
                f"lora_alpha={alpha} with r={r}: the update is scaled by alpha/r = {alpha / r:g}, not 2. Unless "
                "alpha moves with r (alpha = 2r), changing the rank also changes the size of every update "
                "(a fixed alpha silently scales a larger rank down), so the learning rate no longer means "
                "the same thing across ranks.",
                f"lora_alpha = 2 * r = {2 * r}.",
            )


def chosen_targets(record: dict) -> None:
    """chosen_config wraps all four Llama attention projections (MLP projections optional), for CAUSAL_LM."""
    cfg = record["config"]
    if record["error"] is not None:
        fail(
            1,
            f"target_modules={cfg['target_modules']!r} does not fit this Llama model ({record['error']}).",
            "target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj'] for Llama (BERT's are query/key/value).",
        )
    wrapped = set(record["wrapped"])
    missing = sorted({leaf(n) for n in set(record["candidates"]) - wrapped})
    if missing:
        fail(
            1,
            f"chosen_config leaves {', '.join(missing)} without an adapter (target_modules="
            f"{cfg['target_modules']!r}); a partly wrong list is accepted silently by peft.",
            "target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj'] for Llama.",
        )
    stray = sorted({leaf(n) for n in wrapped if leaf(n) not in LLAMA_ATTENTION + LLAMA_MLP})
    if stray:
        fail(
            1,
            f"chosen_config also wraps {', '.join(stray)}, which are not attention or MLP projections.",
            "target only q_proj, k_proj, v_proj, o_proj (optionally the MLP projections).",
        )
    if cfg["task_type"] != "CAUSAL_LM":  # a TaskType enum is recorded as its text
        fail(
            TASK_TYPE, f"task_type is {cfg['task_type']!r}.", "task_type='CAUSAL_LM' (or TaskType.CAUSAL_LM)."
        )


# ---- lab 00: the quantization config for this machine ---------------------------------------------------
def bnb_config_here(cfg: dict) -> None:
    """bnb_config is the guide's QLoRA config with the compute dtype right for the real hardware."""
    _nf4_double_quant(cfg)
    hw = hardware()
    want = expected_compute_dtype()
    got = str(cfg["bnb_4bit_compute_dtype"]).removeprefix("torch.")
    if got != want:
        where = hw["device_name"] if hw["cuda_available"] else "this CPU"
        fail(
            QLORA_CONFIG,
            f"bnb_4bit_compute_dtype is {got}, but on {where} the compute dtype is {want} (the doctor's "
            "'compute dtype' row).",
            "bnb_4bit_compute_dtype=choose_compute_dtype(), with choose_compute_dtype() from exercise 1.",
        )


# ---- lab 02: the BERT classifier with LoRA on its attention -------------------------------------------
def bert_lora_model(record: dict) -> None:
    """`lora_model` is the BERT classifier with LoRA on its attention projections and a trainable, saved head."""
    from checks.targets import _count, _shown, compare_names  # targets imports this module

    if record["model_type"] != "bert" or not record["base_type"].endswith("ForSequenceClassification"):
        fail(
            1,
            f"lora_model wraps a {record['base_type']}, not the course's BERT classifier.",
            "lora_model = get_peft_model(bert_model, LoraConfig(..., target_modules=attention_targets(bert_model), "
            "task_type='SEQ_CLS')).",
        )
    report = compare_names(record["model_type"], list(record["modules"]), lora_names(record))
    found = []
    if report.missed:
        found.append(
            f"{_count(report.missed, 'attention projection')} carry no adapter ({_shown(report.missed)})"
        )
    if report.stray:
        found.append(
            f"LoRA also wraps {_count(report.stray, 'non-attention module')} ({_shown(report.stray)})"
        )
    if found:
        head = any(leaf(n) == "classifier" for n in report.stray)
        fail(
            1,
            "In lora_model " + " and ".join(found) + ".",
            "target BERT's attention projections only: query, key, value (attention.output.dense optional)"
            + (
                "; a new head is trained whole through task_type='SEQ_CLS' (modules_to_save), not given an adapter."
                if head
                else "."
            ),
        )
    heads = [
        n for n, kind in record["modules"].items() if leaf(n) == "classifier" and kind == "modules_to_save"
    ]
    if not heads:
        fail(
            5,
            "the classification head of lora_model is not in modules_to_save: it stays frozen at its random "
            "initialisation and is not saved with the adapter.",
            "LoraConfig(..., task_type='SEQ_CLS') (peft then adds the head to modules_to_save), or "
            "modules_to_save=['classifier'].",
        )


# ---------------------------------------------------------------- lab 08: the adapter's life after training
RESUME_RULE = (
    "Resume training from the saved adapter: PeftModel.from_pretrained(base, dir, is_trainable=True)"
)
BASE_RULE = "An adapter belongs to one base: check its base's name and its outputs against a saved reference"
MULTI_RULE = "Several adapters on one base: load_adapter each saved one, set_adapter the one that computes"
BASE_ONLY_RULE = "The base's own outputs come from disable_adapter(), not get_base_model()"
BLEND_RULE = "Combine adapters with add_weighted_adapter: combination_type='cat' is the exact weighted sum"
RESUME_FIX = "resumed = PeftModel.from_pretrained(fresh_base(), ADAPTER_DIR, is_trainable=True)."
# Three steps at the resume cell's learning rate move the saved weights by a few percent; a new adapter's
# weights are unrelated to the saved ones (lora_A freshly initialised, lora_B zero): about 100%.
RESUME_MAX_DRIFT = 0.5
SAVED_ATOL = 1e-6  # an adapter loaded from its file holds the saved tensors exactly
BASE_ONLY_ATOL = 1e-4  # the same weights on the same input in eval mode (a GPU may reorder a reduction)
BLEND_MAX_ERROR = 0.05  # 'cat' is exact up to rounding (0.3% here); 'linear' and 'svd' are far off


def resumed_adapter(record: dict) -> None:
    """The saved adapter, trainable (and only it), moved by the training cell."""
    if record["lora_trainable"] == 0:
        fail(
            RESUME_RULE,
            f"`resumed` has 0 trainable parameters (of {record['lora_params']:,} LoRA weights): "
            "PeftModel.from_pretrained loads an adapter frozen, for inference, so training updates nothing.",
            RESUME_FIX,
        )
    if record["other_trainable"]:
        fail(
            RESUME_RULE,
            f"{record['other_trainable']:,} parameters outside the adapter train too: the base model was "
            "unfrozen, so resuming fine-tunes the whole model.",
            "let peft choose what trains: " + RESUME_FIX,
        )
    if not record["matched"] or record["drift"] is None or record["drift"] > RESUME_MAX_DRIFT:
        how = (
            f"its weights are {record['drift']:.0%} away from the saved adapter's"
            if record["drift"] is not None
            else "its weights are not the saved adapter's tensors at all"
        )
        fail(
            RESUME_RULE,
            f"the adapter that trains is a NEW one ({how}): get_peft_model creates an adapter, on a base or on a "
            "loaded PeftModel alike; it does not load the trained one, so training starts over.",
            RESUME_FIX,
        )
    if not record["moved"]:
        fail(
            RESUME_RULE,
            "the adapter's weights are still exactly the saved ones: the training cell did not update them.",
            "run the cell that trains `resumed` after loading it with is_trainable=True.",
        )


def base_match(record: dict) -> None:
    """adapter_problems: nothing on the own base; a problem on another checkpoint and on another name."""
    own = record["own base"]
    for case, result in record.items():
        if result["verdict"] in ("error", "not a list"):
            fail(
                BASE_RULE,
                f"adapter_problems on the {case} {'raised' if result['verdict'] == 'error' else 'returned no list'}: "
                f"{result['detail']}.",
                "return a list of problem descriptions, [] when the adapter belongs to the base.",
            )
    if own["verdict"] != "belongs":
        fail(
            BASE_RULE,
            f"adapter_problems reports problems for the adapter's own, freshly loaded base: {own['detail']}.",
            "compare with the reference on REFERENCE_FILE's input_ids, in eval mode, with the tolerance "
            "1e-3 x the largest reference logit.",
        )
    if record["another checkpoint, same name"]["verdict"] != "flagged":
        fail(
            BASE_RULE,
            "on another checkpoint with the base's name and shapes (other weights), adapter_problems found "
            "nothing, and nothing raises when such a base is loaded.",
            "load the adapter onto the base and compare its logits with the reference saved at training time "
            "(REFERENCE_FILE).",
        )
    if record["same weights, another name"]["verdict"] != "flagged":
        fail(
            BASE_RULE,
            "on a base whose name differs from the one the adapter was trained on, adapter_problems found "
            "nothing.",
            "compare adapter_config.json's base_model_name_or_path with base.config._name_or_path.",
        )


def adapter_set(record: dict) -> None:
    """Both saved adapters loaded under their names, concise active, nothing merged."""
    missing = sorted({"instruct", "concise"} - set(record["adapters"]))
    if missing:
        fail(
            MULTI_RULE,
            f"`multi` has no adapter named {', '.join(missing)} (it has {record['adapters']}).",
            "PeftModel.from_pretrained(fresh_base(), ADAPTER_DIR, adapter_name='instruct'), then "
            "multi.load_adapter(SECOND_DIR, adapter_name='concise').",
        )
    for name, folder in (("instruct", "ADAPTER_DIR"), ("concise", "SECOND_DIR")):
        difference = record[f"{name}_vs_saved"]
        if difference is None or difference > SAVED_ATOL:
            fail(
                MULTI_RULE,
                f"the adapter named {name} is not the one saved in {folder}: add_adapter or get_peft_model make "
                "a new, untrained adapter under that name.",
                f"multi.load_adapter({folder}, adapter_name={name!r}).",
            )
    if record["merged"]:
        fail(
            MULTI_RULE,
            f"{record['merged']} is merged into the base weights: the adapters no longer switch.",
            "keep the adapters unmerged while you switch between them; merge only a deployment copy.",
        )
    if record["active"] != ["concise"]:
        fail(
            MULTI_RULE,
            f"the active adapter is {record['active']}: load_adapter adds an adapter without activating it.",
            "multi.set_adapter('concise').",
        )


def base_only_outputs(record: dict) -> None:
    """The bare base's logits, from `multi`, which keeps both adapters enabled."""
    if not record["layers"]:
        fail(
            BASE_ONLY_RULE,
            "`multi` no longer carries any adapter layer: unload() or merge_and_unload() took them out of the "
            "model, so both adapters are gone from it.",
            "with multi.disable_adapter(): base_only_logits = logits_of(multi).",
        )
    if not record["shape_ok"]:
        fail(
            BASE_ONLY_RULE,
            "base_only_logits do not have the probe's shape.",
            "base_only_logits = logits_of(multi).",
        )
    if record["max_diff"] > BASE_ONLY_ATOL:
        fail(
            BASE_ONLY_RULE,
            f"base_only_logits differ from the bare base's by up to {record['max_diff']:.3g}: an adapter still "
            "computed. get_base_model() returns the base with the LoRA layers peft injected into it, still active.",
            "with multi.disable_adapter(): base_only_logits = logits_of(multi).",
        )
    if not record["enabled"]:
        fail(
            BASE_ONLY_RULE,
            "the adapters of `multi` are left disabled, so it computes the bare base from now on.",
            "use the context manager, `with multi.disable_adapter():`, which enables them again at the end.",
        )


def weighted_blend(record: dict) -> None:
    """An active adapter "blend" whose update is 0.7 x instruct's + 0.3 x concise's in every layer."""
    if "blend" not in record["adapters"]:
        fail(
            BLEND_RULE,
            f"`multi` has no adapter named blend (it has {record['adapters']}).",
            "multi.add_weighted_adapter(['instruct', 'concise'], [0.7, 0.3], 'blend', combination_type='cat').",
        )
    error, swapped = record["error"], record["swapped_error"]
    if error is None or error > BLEND_MAX_ERROR:
        if swapped is not None and swapped <= BLEND_MAX_ERROR:
            found = "the weights are swapped: its update is 0.3 x instruct + 0.7 x concise."
        elif error is None:
            found = (
                "no LoRA layer of `multi` carries blend, instruct and concise together, so the blend's update "
                "cannot be the sum of theirs (were the adapters unloaded or deleted?)."
            )
        else:
            found = (
                f"its update differs from 0.7 x instruct + 0.3 x concise by {error:.0%}: 'linear' averages A and "
                "B separately, so cross terms B_i A_j appear, and 'svd' keeps only a low-rank approximation."
            )
        fail(
            BLEND_RULE,
            found,
            "multi.add_weighted_adapter(['instruct', 'concise'], [0.7, 0.3], 'blend', combination_type='cat').",
        )
    if record["active"] != ["blend"]:
        fail(
            BLEND_RULE,
            f"the active adapter is {record['active']}: add_weighted_adapter adds the blend without activating it.",
            "multi.set_adapter('blend').",
        )


# ---------------------------------------------------------------- lab 09: chat fine-tuning with TRL
TOKENS_RULE = "Chat tokens: the role markers as special tokens, and a pad token that is not EOS"
TEMPLATE_RULE = "A chat template for assistant-only loss: the reply and its EOS inside {% generation %}"
NEW_TOKENS_RULE = "Train new tokens with trainable_token_indices, not whole embeddings in modules_to_save"
LABELS_RULE = "SFT labels: the prompt masked (-100), the reply and its EOS kept, so the model learns to stop"
STOPS_RULE = "A chat model trained with its EOS labelled stops generating after its answer"
CHAT_MARKERS = ("<|user|>", "<|assistant|>")
TOKENS_FIX = (
    "tokenizer.add_special_tokens({'additional_special_tokens': ['<|user|>', '<|assistant|>']}); and if "
    "tokenizer.pad_token is None or is the EOS, tokenizer.add_special_tokens({'pad_token': '<|pad|>'})."
)
TEMPLATE_FIX = "end the assistant's turn with \"{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}\"."
MAX_CHAT_SHARE = 0.01  # LoRA on q/k/v/o plus two token rows: 0.3% here; whole embeddings: over 90%


def chat_tokens(record: dict) -> None:
    """Both role markers are single special tokens, and padding has a token of its own."""
    for marker in CHAT_MARKERS:
        got = record["markers"][marker]
        if got["pieces"] != 1 or not got["special"]:
            fail(
                TOKENS_RULE,
                f"{marker} is {got['pieces']} tokens{'' if got['special'] else ', not a special token'}: "
                "as plain text a role marker is split into pieces the model can also meet in ordinary text, "
                "and a template's structure is not one learnable symbol.",
                TOKENS_FIX,
            )
    if record["pad_id"] is None or record["pad_id"] == record["eos_id"]:
        found = (
            "the tokenizer has no pad token."
            if record["pad_id"] is None
            else f"the pad token is the EOS ({record['eos_token']!r}, id {record['eos_id']})."
        )
        fail(
            TOKENS_RULE,
            found
            + " Any collator that masks padding by its id (transformers' DataCollatorForLanguageModeling, "
            "many training scripts) then turns every EOS label into -100: the model never learns to stop.",
            TOKENS_FIX,
        )
    if not record["new_ids_match"]:
        fail(
            TOKENS_RULE,
            f"new_token_ids is {record['new_token_ids']!r}, not the ids of {list(CHAT_MARKERS)} "
            f"({record['marker_ids']}).",
            "new_token_ids = tokenizer.convert_tokens_to_ids(['<|user|>', '<|assistant|>']).",
        )


def chat_template_mask(record: dict) -> None:
    """On a two-turn conversation the assistant mask covers each reply and its EOS, nothing of the prompt,
    and the generation prompt renders the assistant's header as training saw it."""
    if record["error"]:
        fail(
            TEMPLATE_RULE,
            f"the chat template does not render a conversation: {record['error']}.",
            TEMPLATE_FIX,
        )
    if not all(record["markers_used"].values()):
        missing = [m for m, used in record["markers_used"].items() if not used]
        fail(
            TEMPLATE_RULE,
            f"the rendered conversation does not contain {missing} as tokens.",
            "start each turn with its marker: <|user|> before the user's words, <|assistant|> before the reply.",
        )
    if not record["masked"]:
        fail(
            TEMPLATE_RULE,
            "the template has no {% generation %} block: the assistant mask is empty, so assistant_only_loss "
            "has nothing to train on.",
            TEMPLATE_FIX,
        )
    if record["prompt_masked_in"]:
        fail(
            TEMPLATE_RULE,
            f"the generation block holds words of the prompt ({record['prompt_masked_in']}): the loss would "
            "train the model to write the user's side too.",
            "open {% generation %} after the assistant's header, close it after the EOS.",
        )
    if record["replies_in_mask"] < record["turns"]:
        fail(
            TEMPLATE_RULE,
            f"only {record['replies_in_mask']} of the {record['turns']} replies are inside the generation block.",
            TEMPLATE_FIX,
        )
    if record["eos_in_mask"] < record["turns"]:
        where = "is not in the template" if not record["eos_rendered"] else "is outside the generation block"
        fail(
            TEMPLATE_RULE,
            f"the EOS after the assistant's reply {where}: with assistant-only loss its label is -100, so the "
            "model never learns to stop (TRL warns, and the training loss still looks healthy).",
            TEMPLATE_FIX,
        )
    if not record["generation_prompt_prefix"]:
        fail(
            TEMPLATE_RULE,
            "add_generation_prompt=True does not render the start of the assistant's turn as the training "
            f"text has it (rendered: {record['generation_prompt']!r}).",
            "{% if add_generation_prompt %}<|assistant|>\\n{% endif %}, exactly the header the replies follow.",
        )


def chat_lora(record: dict) -> None:
    """lora_config, applied to a fresh base: LoRA on the attention projections, the new tokens' rows
    trainable through trainable_token_indices, no whole embedding or output layer, a share under 1%."""
    whole = [
        n for n in record["whole_modules"] if leaf(n) in ("embed_tokens", "lm_head", "embed_in", "embed_out")
    ]
    if whole:
        fail(
            NEW_TOKENS_RULE,
            f"modules_to_save={record['modules_to_save']!r} trains and saves the whole "
            f"{' and '.join(sorted({leaf(n) for n in whole}))}: {record['share']:.1%} of the model trains, "
            "and every saved adapter carries full copies of them (hundreds of MB on a real model) to teach "
            "the model two new tokens.",
            "trainable_token_indices={'embed_tokens': new_token_ids}: only those rows train and are saved.",
        )
    untrained = sorted(set(record["new_ids"]) - set(record["token_rows"]))
    if untrained:
        fail(
            NEW_TOKENS_RULE,
            f"the new tokens {untrained} are not trainable: their embeddings stay at the values the "
            "tokenizer's new ids happened to get (random rows), frozen, so the model cannot learn what "
            "<|user|> and <|assistant|> mean.",
            "LoraConfig(..., trainable_token_indices={'embed_tokens': new_token_ids}).",
        )
    missing = sorted(set(LLAMA_ATTENTION) - set(record["lora_leaves"]))
    if missing:
        fail(
            1,
            f"LoRA is not on {missing} (it wraps {record['lora_leaves'] or 'nothing'}).",
            LLAMA_FIX,
        )
    if record["share"] >= MAX_CHAT_SHARE:
        fail(
            TRAINABLE_SHARE,
            f"{record['share']:.2%} of the model trains.",
            "r=16 on the attention projections and only the new tokens' rows: about 0.3% here.",
        )


def sft_labels(record: dict) -> None:
    """In the batches the trainer really builds: no prompt token labelled, each reply and its EOS kept."""
    n = record["examples"]
    if not n:
        fail(LABELS_RULE, "the trainer's training set is empty.", "pass train_dataset=train_chat.")
    if record["no_marker"] == n:
        fail(
            LABELS_RULE,
            "the trainer's sequences contain no <|assistant|> token: the training data is not rendered with "
            "the chat template.",
            "pass the conversational data (train_chat) and processing_class=tokenizer to SFTTrainer.",
        )
    if record["prompt_labelled"]:
        fail(
            LABELS_RULE,
            f"in {record['prompt_labelled']} of {n} sequences prompt tokens carry labels: the loss trains the "
            "model to reproduce the user's words and the template, and the reply is a small part of it.",
            "SFTConfig(assistant_only_loss=True) for messages (or prompt/completion data, whose completion-only "
            "loss is the default).",
        )
    if record["eos_missing"]:
        fail(
            LABELS_RULE,
            f"{record['eos_missing']} of {n} sequences have no EOS after the reply (cut by max_length, or "
            "never rendered): there is nothing to learn to stop at.",
            "max_length=64 and a template that ends each reply with {{ eos_token }}.",
        )
    if record["eos_kept"] < n:
        fail(
            LABELS_RULE,
            f"the EOS after the reply is labelled -100 in {n - record['eos_kept']} of {n} sequences: it is "
            "masked from the loss (outside the template's generation block, or a collator that masks the "
            "pad id while pad = EOS), so the model never learns to stop.",
            "keep the EOS inside {% generation %}, a pad token of its own, and SFTTrainer's own collator.",
        )
    if record["reply_labelled"] < n:
        fail(
            LABELS_RULE,
            f"only {record['reply_labelled']} of {n} sequences have their reply labelled.",
            "assistant_only_loss=True with a template whose generation block holds the reply.",
        )


def chat_adapter_files(record: dict) -> None:
    """The saved adapter: LoRA tensors and the new tokens' rows only, and the tokenizer that renders its
    prompts beside it."""
    if record["whole_tensors"]:
        fail(
            NEW_TOKENS_RULE,
            f"the adapter file holds whole layers ({', '.join(record['whole_tensors'][:2])}; "
            f"{record['adapter_mb']:.1f} MB): embeddings saved whole, because they were in modules_to_save or "
            "because peft saves resized embeddings by default.",
            "trainable_token_indices for the new tokens, and "
            "trainer.model.save_pretrained(ADAPTER_DIR, save_embedding_layers=False).",
        )
    if not record["tokenizer_saved"]:
        fail(
            TOKENS_RULE,
            f"no tokenizer with {list(CHAT_MARKERS)} and the chat template is saved in the adapter folder: "
            "whoever loads the adapter cannot build the prompts it was trained on.",
            "tokenizer.save_pretrained(ADAPTER_DIR) (trainer.save_model saves it too).",
        )
    if not record["template_saved"]:
        fail(
            TEMPLATE_RULE,
            "the tokenizer saved with the adapter has no chat template.",
            "set tokenizer.chat_template before tokenizer.save_pretrained(ADAPTER_DIR).",
        )


MIN_STOPPED = 0.5  # trained with its EOS labelled: 10 of 10 prompts stop here; with it masked: 0 of 10


def chat_stops(record: dict) -> None:
    """Loaded from its folder, the trained adapter ends most answers with EOS."""
    if record["stopped"] < MIN_STOPPED * record["prompts"]:
        fail(
            STOPS_RULE,
            f"loaded from the adapter folder, the model ran to the {record['max_new_tokens']}-token limit on "
            f"{record['prompts'] - record['stopped']} of {record['prompts']} validation prompts (e.g. "
            f"{record['example']!r}), and predicts EOS after {record['eos_after_reply']} of "
            f"{record['replies']} reference replies: EOS was never a label it learned.",
            "keep each reply's EOS in the loss: {{ eos_token }} inside {% generation %}, and a pad token that "
            "is not the EOS.",
        )


# ---------------------------------------------------------------- lab 10: variants and precision
VARIANTS_RULE = "Compare LoRA's variants on one budget: the same rank, alpha, steps and data for each"
CHOICE_RULE = "Choose a variant by what you measured, not by what it is called"
MEMORY_RULE = "Training memory: frozen weights at their dtype, fp32 adapter weights, their gradients and AdamW's two states"
FP16_RULE = "fp16 mixed precision: the trainable adapter in fp32 (GradScaler refuses fp16 gradients), the base in fp16"
MERGE_RULE = (
    "Merge for deployment into a 16-bit base: merging into a 4-bit base re-quantizes and loses fidelity"
)
VARIANT_NAMES = ("attention", "all_linear", "rslora", "dora", "pissa")
SCALING_RTOL = 1e-6


def lora_variants(record: dict) -> None:
    """Each named variant, applied to a fresh base, is what its name says, all on one rank and alpha."""
    missing = [n for n in VARIANT_NAMES if n not in record["variants"]]
    if missing:
        fail(
            VARIANTS_RULE, f"`variants` has no {missing}.", f"one LoraConfig per name: {list(VARIANT_NAMES)}."
        )
    got = record["variants"]
    budgets = {(v["r"], v["alpha"]) for v in got.values()}
    if len(budgets) > 1:
        shown = ", ".join(f"{n} r={v['r']}/alpha={v['alpha']}" for n, v in got.items())
        fail(
            VARIANTS_RULE,
            f"the variants do not share one rank and alpha ({shown}): a bigger adapter wins by size, so the "
            "comparison no longer says which variant is better.",
            "r=8, lora_alpha=16 for every variant.",
        )
    for name, v in got.items():
        want = set(LLAMA_ATTENTION) if name == "attention" else set(LLAMA_NAMES)
        if set(v["leaves"]) != want:
            fail(
                VARIANTS_RULE if name == "attention" else 1,
                f"variant {name!r} wraps {v['leaves']}, not {sorted(want)}.",
                "target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj'] for attention only, "
                "target_modules='all-linear' for every other variant.",
            )
        rs = name == "rslora"
        want_scaling = v["alpha"] / (v["r"] ** 0.5 if rs else v["r"])
        if abs(v["scaling"] - want_scaling) > SCALING_RTOL * want_scaling:
            fail(
                VARIANTS_RULE,
                f"variant {name!r} scales its update by {v['scaling']:.3f}, not alpha/{'sqrt(r)' if rs else 'r'} "
                f"= {want_scaling:.3f}.",
                "use_rslora=True for rslora only (alpha/sqrt(r)); plain alpha/r for the others.",
            )
        if v["dora"] != (name == "dora"):
            fail(
                VARIANTS_RULE,
                f"variant {name!r} {'has' if v['dora'] else 'has no'} DoRA magnitude vectors.",
                "use_dora=True for dora only.",
            )
        pissa = name == "pissa"
        if pissa and (v["b_zero"] or not v["base_changed"]):
            fail(
                VARIANTS_RULE,
                "variant 'pissa' starts like plain LoRA (B = 0, base weights untouched): PiSSA puts the weight's "
                "principal singular directions into A and B and leaves the base the residual.",
                "init_lora_weights='pissa' (or 'pissa_niter_4', a fast SVD).",
            )
        if not pissa and (not v["b_zero"] or v["base_changed"]):
            fail(
                VARIANTS_RULE,
                f"variant {name!r} does not start from the base model (B is not zero, or the base changed): "
                "the comparison no longer starts from one point.",
                "the default init_lora_weights=True for every variant but pissa.",
            )


def variant_choice(record: dict) -> None:
    """chosen_variant is the measured best: the lowest final loss in the learner's own results."""
    losses = record["losses"]
    if not losses:
        fail(CHOICE_RULE, "`results` holds no measured variant.", "run the comparison cell first.")
    best = min(losses, key=losses.get)
    if record["chosen"] != best:
        shown = ", ".join(f"{n} {loss:.3f}" for n, loss in sorted(losses.items(), key=lambda kv: kv[1]))
        fail(
            CHOICE_RULE,
            f"chosen_variant is {record['chosen']!r}, but your own measurement puts {best!r} lowest "
            f"(final loss: {shown}).",
            "chosen_variant = min(results, key=lambda name: results[name]['loss']).",
        )


def memory_formula(record: dict) -> None:
    """training_bytes gives, for each case, exactly the bytes the rule counts."""
    for case in record["cases"]:
        if case.get("error"):
            fail(
                MEMORY_RULE,
                f"training_bytes{case['args']} raised {case['error']}.",
                "return a dict of three ints.",
            )
        for part in ("weights", "gradients", "optimizer"):
            if case["got"].get(part) != case["want"][part]:
                fail(
                    MEMORY_RULE,
                    f"training_bytes{tuple(case['args'])} gives {part} = {case['got'].get(part)!r}, "
                    f"expected {case['want'][part]:,}. {_MEMORY_HINT[part]}",
                    "weights = frozen x weight_bytes + trainable x 4; gradients = trainable x 4; "
                    "optimizer = trainable x 8.",
                )
    if record["measured"] != record["predicted"]:
        fail(
            MEMORY_RULE,
            f"on the lab's model after one AdamW step, {record['measured']} bytes are held, and training_bytes "
            f"predicts {record['predicted']}.",
            "count exactly what the optimizer step keeps: weights, gradients of trainable parameters, AdamW's "
            "exp_avg and exp_avg_sq.",
        )


_MEMORY_HINT = {
    "weights": "Frozen weights stay at the base's dtype; peft keeps the adapter's own weights in fp32.",
    "gradients": "Only trainable parameters get gradients (fp32, as the adapter's weights): the frozen base "
    "gets none.",
    "optimizer": "AdamW keeps two fp32 states per trainable parameter (exp_avg and exp_avg_sq).",
}


def fp16_ready(record: dict) -> None:
    """fp16_model trains under GradScaler: trainable in fp32, frozen floating weights in fp16."""
    if record["trainable_dtypes"] != ["float32"]:
        fail(
            FP16_RULE,
            f"the trainable parameters are {record['trainable_dtypes']}: GradScaler.unscale_ raises "
            "'Attempting to unscale FP16 gradients' for fp16 ones, and bf16 adapters under fp16 autocast "
            "round every update.",
            "get_peft_model's default autocast_adapter_dtype=True, or peft's "
            "cast_mixed_precision_params(model, dtype=torch.float16) after wrapping.",
        )
    if record["frozen_dtypes"] != ["float16"]:
        fail(
            FP16_RULE,
            f"the frozen weights are {record['frozen_dtypes']}: casting the whole model to fp32 doubles its "
            "memory and leaves nothing for mixed precision to save.",
            "keep the base in fp16 and only the adapter in fp32.",
        )
    if record["step_error"]:
        fail(
            FP16_RULE, f"one GradScaler step failed: {record['step_error']}.", "trainable parameters in fp32."
        )


MERGE_FACTOR = (
    3.0  # the learner's gaps against the grader's: within this factor (CPUs round bf16 differently)
)


def merge_fidelity(record: dict) -> None:
    """merge_gaps are the logit gaps the grader measures (within a factor), and deploy_from is 16-bit."""
    got, want = record["got"], record["want"]
    for route in ("bf16", "nf4"):
        value = got.get(route)
        if not isinstance(value, (int, float)) or value <= 0:
            fail(
                MERGE_RULE,
                f"merge_gaps[{route!r}] is {value!r}: a merged model's logits always differ a little from the "
                "unmerged adapter's (rounding), so a gap of 0 means the comparison was not made.",
                "compare the merged model's logits with the unmerged adapter model's, on the same probe.",
            )
        if not want[route] / MERGE_FACTOR <= value <= want[route] * MERGE_FACTOR:
            fail(
                MERGE_RULE,
                f"merge_gaps[{route!r}] = {value:.3g}, where merging into that base measures {want[route]:.3g} "
                "here.",
                "the gap is max |logits(merged) - logits(unmerged, fp32 base)| on the probe.",
            )
    if record["deploy_from"] != "bf16":
        fail(
            MERGE_RULE,
            f"deploy_from is {record['deploy_from']!r}, yet merging into NF4 is {want['nf4'] / want['bf16']:.0f}x "
            "further from the trained model than merging into bf16.",
            "deploy_from = 'bf16': merge on a 16-bit base, quantize the merged copy afterwards if needed.",
        )
