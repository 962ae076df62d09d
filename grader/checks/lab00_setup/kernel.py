"""Hidden checks for lab 00 (set-up and the environment doctor).

`choose_compute_dtype()` is called on simulated machines (labutils.machines: torch's answers about the
hardware are patched, consistently, as a Colab T4, a V100, an A100, an L4, an H100, three cards the lab never
names or a CPU-only machine answers them), so a function that hard-codes one dtype or gets one machine wrong is caught on whatever
machine grading runs. `bnb_config` is checked against the doctor's recommendation for the real hardware.
"""

from __future__ import annotations

from checks import QLORA_CONFIG, PeftMistake, fail, need
from checks.evidence import publish
from checks.lab00_setup import judges

# Kept short: the rule's title, what was found and this fix make one readable message.
FIX = "float16 on a CUDA GPU without native bf16 (capability < 8.0), else bfloat16."


def _chooser(ns: dict):
    choose = need(ns, "choose_compute_dtype", where="the exercise 1 cell")
    if not callable(choose):
        raise PeftMistake(
            f"`choose_compute_dtype` is a {type(choose).__name__}, not a function. "
            "Fix: define it with `def choose_compute_dtype():` and return a dtype."
        )
    return choose


def _verdict(rows: list[dict]) -> None:
    """Fail on the first machine it gets wrong (in detail) and name the other wrong ones."""
    from labutils.machines import dtype_name

    wrong = [r for r in rows if not r["ok"]]
    if not wrong:
        return
    first, m = wrong[0], wrong[0]["machine"]
    where = f"on {m.label}" + (f" ({m.device_name}; {m.why})" if m.cuda else f" ({m.why})")
    right = dtype_name(first["right"])
    if first["error"]:
        found = f"choose_compute_dtype() raised an error {where}: {first['error'][:70]}. It should return {right}."
    else:
        got = dtype_name(first["answer"])
        found = f"choose_compute_dtype() returned {got} {where}, where it should be {right}."
        if got == "float32":
            found += " float32 doubles memory."
        elif got not in ("bfloat16", "float16"):
            found += " Return torch.bfloat16 or torch.float16."
    if len(wrong) > 1:
        found += " Also wrong on: " + ", ".join(r["machine"].label for r in wrong[1:]) + "."
    fail(QLORA_CONFIG, found, FIX)


def _more_gpus() -> tuple:
    """Cards the lab never names (Turing, Pascal, an Ampere workstation card): a rule that lists the names of the
    lab's machines instead of reading what the card can do gets one of them wrong."""
    from labutils.machines import Machine

    return (
        Machine("a Quadro RTX 6000", "Quadro RTX 6000", (7, 5), 24),
        Machine("a Tesla P100", "Tesla P100-PCIE-16GB", (6, 0), 16),
        Machine("an RTX A6000", "NVIDIA RTX A6000", (8, 6), 48),
    )


def compute_dtype_on_gpus(ns: dict) -> None:
    """float16 on GPUs without native bf16 (T4, V100, and cards the lab never names), bfloat16 on Ampere and newer
    (A100, L4, H100)."""
    from labutils.machines import GPUS, try_on_machines

    _verdict(try_on_machines(_chooser(ns), (*GPUS, *_more_gpus()), namespace=ns))


def compute_dtype_on_cpu(ns: dict) -> None:
    """bfloat16 on a machine without CUDA, as the course's doctor recommends."""
    from labutils.machines import MACHINES, try_on_machines

    _verdict(try_on_machines(_chooser(ns), [MACHINES["cpu"]], namespace=ns))


def bnb_config_here(ns: dict) -> None:
    """bnb_config is the guide's QLoRA config with the compute dtype right for the real hardware."""
    from transformers import BitsAndBytesConfig

    cfg = need(ns, "bnb_config", BitsAndBytesConfig, where="the exercise 2 cell")
    judges.bnb_config_here(publish("bnb_config_here", cfg.to_dict()))
