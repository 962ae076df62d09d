"""Lab 06's on-disk check: the saved adapter carries the classification head. Standard library only.

Like adapter_files, this runs inside the learner's kernel (hidden test cell) and, in a fresh process,
outside it (checks/outside.py), so it must give the same verdict in both places without torch.
"""

from __future__ import annotations

from pathlib import Path

from checks import fail, need
from checks.adapter_files import ADAPTER_WEIGHTS, adapter_folder_clean, full_weight_files, safetensors_header

# Rules of this lab that are not among the guide's five numbered mistakes.
TRAIN_HEAD = "Train the adapter and the head before saving"
BEATS_CHANCE = "A trained classifier beats chance on held-out data"
RELOAD_SAME = "A saved adapter reloads onto a fresh base with identical predictions"

# What transformers calls a sequence-classification head: BERT/RoBERTa `classifier`, decoder models `score`.
HEAD_NAMES = ("classifier", "score")
SAVE_HEAD_FIX = (
    "task_type='SEQ_CLS' (or TaskType.SEQ_CLS), which adds the head to modules_to_save, or "
    "modules_to_save=['classifier']; then model.save_pretrained(ADAPTER_DIR) saves it with the adapter."
)


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
    adapter_dir = Path(need(ns, "ADAPTER_DIR", (str, Path)))
    if not (adapter_dir / "adapter_config.json").is_file():
        fail(
            RELOAD_SAME,
            f"{adapter_dir} holds no adapter_config.json: no adapter was saved there.",
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
