"""Lab 01's judges: the wrapped course model and its trainable share, from its manifest (checks.inspect_model)."""

from __future__ import annotations

from checks import TRAINABLE_SHARE, PeftMistake, fail
from checks.inspect_model import active_config, config_as_asked, leaf, lora_names, require_lora_model
from labutils.facts import LLAMA_ATTENTION

# Rules of this lab that are not among the guide's five numbered mistakes (the counting checks: kernel.py).
LORA_SHAPES = "LoRA anatomy: each targeted layer adds A (r x in) + B (out x r)"
SHAPES_ONLY = "Count from module shapes alone"


EXPECTED_R, EXPECTED_ALPHA = 16, 32  # lab 01 asks for the guide's r=16, alpha=2r
LLAMA_FIX = "target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj'] for this Llama-family model."
GPT2_NAMES = ("c_attn", "c_proj", "c_fc")


def course_model_wrapped(record: dict) -> None:
    """The course model carries LoRA (r=16, alpha=32, a causal LM's task type) on exactly q/k/v/o_proj."""
    require_lora_model(record, "Llama", LLAMA_FIX, foreign=("GPT-2", GPT2_NAMES))
    cfg = active_config(record)
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
            LLAMA_FIX,
        )
    config_as_asked(cfg, "lora_config", EXPECTED_R, EXPECTED_ALPHA, "CAUSAL_LM")


def course_model_share(record: dict) -> None:
    """Only LoRA trains (base frozen), well under 1% by peft's counter, and trainable_percent says so."""
    if not record["peft"]:
        fail(
            TRAINABLE_SHARE,
            "`model` is not a PeftModel, so no LoRA adapter is attached.",
            "model = get_peft_model(model, lora_config).",
        )
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
    # The guide's "< 1%" holds in both profiles: the tiny course model trains 0.94%, the hub's SmolLM2-360M
    # 0.90%. An override with a smaller model (SmolLM2-135M, hidden size 576: 1.4%) fails it.
    if share >= 1.0:
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
