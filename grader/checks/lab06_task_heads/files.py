"""Lab 06's on-disk check: the saved adapter carries the classification head. Standard library only.

Like checks.adapter_files, this runs inside the learner's kernel (hidden test cell) and, in a fresh process,
outside it (checks.outside), so it must give the same verdict in both places without torch.
"""

from __future__ import annotations

from pathlib import Path

from checks import fail
from checks.adapter_files import (
    ADAPTER_WEIGHTS,
    adapter_folder_clean,
    full_weight_files,
    safetensors_header,
    saved_adapter_dir,
)
from checks.lab06_task_heads.judges import HEAD_NAMES, RELOAD_SAME, SAVE_HEAD_FIX


def head_tensors(header: dict) -> dict[str, str]:
    """Saved head tensors (not LoRA matrices): 'classifier.weight' -> full saved name."""
    found = {}
    for name in header:
        parts = name.split(".")
        if "lora_" in name or len(parts) < 2 or parts[-2] not in HEAD_NAMES:
            continue
        found[".".join(parts[-2:])] = name
    return found


def head_saved(ns: dict) -> None:
    """ADAPTER_DIR holds a LoRA adapter whose safetensors file also carries the head's weight and bias,
    and nothing else lies in the adapter folder or beside it (mistake 4)."""
    adapter_dir = saved_adapter_dir(
        ns,
        RELOAD_SAME,
        "{adapter_dir} holds no adapter_config.json: no adapter was saved there.",
        "model.save_pretrained(ADAPTER_DIR) on the PeftModel.",
    )
    adapter_folder_clean(adapter_dir)
    output_dir = Path(ns.get("OUTPUT_DIR", adapter_dir))
    if stray := full_weight_files(output_dir):
        fail(
            4,
            f"model weights were saved beside the adapter ({', '.join(str(p) for p in stray[:3])}).",
            "save only the adapter, with the head in it: model.save_pretrained(ADAPTER_DIR).",
        )
    try:
        header = safetensors_header(adapter_dir / ADAPTER_WEIGHTS)
    except FileNotFoundError:
        fail(RELOAD_SAME, f"{adapter_dir} has no {ADAPTER_WEIGHTS}.", "model.save_pretrained(ADAPTER_DIR).")
    except ValueError as err:
        fail(RELOAD_SAME, f"{err}.", "model.save_pretrained(ADAPTER_DIR).")
    if not any("lora_" in name for name in header):
        fail(
            RELOAD_SAME,
            f"{ADAPTER_WEIGHTS} holds no LoRA matrices.",
            "save the PeftModel itself: model.save_pretrained(ADAPTER_DIR).",
        )
    saved = head_tensors(header)
    if not ({"classifier.weight", "classifier.bias"} <= set(saved) or "score.weight" in saved):
        fail(
            5,
            f"the saved adapter holds LoRA matrices but not the classification head's weight and bias "
            f"(head tensors found: {', '.join(sorted(saved)) or 'none'}). The head is not in modules_to_save, so it "
            "stayed random and frozen, and whoever loads this adapter gets a new random head: different predictions.",
            SAVE_HEAD_FIX,
        )
