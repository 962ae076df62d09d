"""Checks of a saved adapter folder, read from disk with the standard library only.

No torch, peft or transformers import: the same functions run inside the learner's kernel (hidden
test cells) and, in a fresh process, outside it (checks/outside.py), where they take about a second
instead of the ten that importing torch costs for every graded submission.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from checks import TRAINED_ADAPTER, fail, need

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def full_weight_files(root: Path) -> list[Path]:
    """Files anywhere under root that hold a full model rather than an adapter."""
    found = []
    for path in Path(root).rglob("*"):
        if not path.is_file():
            continue
        name = path.name
        if (
            name == "config.json"
            or name in WEIGHT_FILES
            or (name.startswith(("model-", "pytorch_model-")) and name.endswith((".safetensors", ".bin")))
        ):
            found.append(path)
        elif name.endswith(".safetensors") and name != ADAPTER_WEIGHTS:
            found.append(path)
    return sorted(found)


def read_adapter_config(adapter_dir: Path) -> dict:
    return json.loads((Path(adapter_dir) / "adapter_config.json").read_text())


def adapter_tensors_nonzero(adapter_dir: Path) -> dict[str, bool]:
    """Each saved adapter tensor's name and whether any of its values is non-zero.

    Reads the safetensors layout directly (an 8-byte header length, a JSON header of names and byte
    ranges, then the raw data); an adapter saved as .bin needs torch to unpickle.
    """
    path = Path(adapter_dir) / ADAPTER_WEIGHTS
    if not path.exists():
        legacy = Path(adapter_dir) / "adapter_model.bin"
        if not legacy.exists():
            raise FileNotFoundError(path)
        import torch

        state = torch.load(legacy, map_location="cpu", weights_only=True)
        return {name: bool(torch.count_nonzero(t)) for name, t in state.items()}
    data = path.read_bytes()
    try:
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + size])
    except (struct.error, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path.name} is not a safetensors file") from err
    body = memoryview(data)[8 + size :]
    return {
        name: any(body[info["data_offsets"][0] : info["data_offsets"][1]])
        for name, info in header.items()
        if name != "__metadata__"
    }


def _adapter_dir(ns: dict) -> Path:
    adapter_dir = Path(need(ns, "ADAPTER_DIR", (str, Path)))
    if not adapter_dir.is_dir():
        fail(TRAINED_ADAPTER, f"nothing was saved in {adapter_dir}.", "model.save_pretrained(ADAPTER_DIR).")
    return adapter_dir


def adapter_only_saved(ns: dict) -> None:
    """ADAPTER_DIR holds the adapter only, and no full model weights lie anywhere in OUTPUT_DIR."""
    adapter_dir = _adapter_dir(ns)
    output_dir = Path(ns.get("OUTPUT_DIR", adapter_dir))
    full = full_weight_files(output_dir) + full_weight_files(adapter_dir)
    if full:
        shown = ", ".join(str(p) for p in sorted(set(full))[:3])
        fail(
            4,
            f"full model weights were saved ({shown}): a merged or base model is gigabytes on a real "
            "model and can no longer be swapped or stacked.",
            "save the adapter only with model.save_pretrained(ADAPTER_DIR); merge only for deployment.",
        )
    if not (adapter_dir / "adapter_config.json").exists():
        fail(
            4,
            f"{adapter_dir} has no adapter_config.json.",
            "model.save_pretrained(ADAPTER_DIR) on the PeftModel.",
        )
    try:
        tensors = adapter_tensors_nonzero(adapter_dir)
    except FileNotFoundError:
        fail(4, f"{adapter_dir} has no {ADAPTER_WEIGHTS}.", "model.save_pretrained(ADAPTER_DIR).")
    not_lora = [k for k in tensors if "lora_" not in k]
    if not_lora:
        fail(
            4,
            f"the adapter file holds {len(not_lora)} non-LoRA tensors (e.g. {not_lora[0]}): full base weights "
            "ride along (a targeted head or embedding is saved whole, or the model was merged).",
            "target only the projections and save the PeftModel itself, not a merged or unwrapped model.",
        )


def adapter_trained(ns: dict) -> None:
    """The saved adapter is the trained one: a LoRA config and at least one non-zero lora_B."""
    adapter_dir = _adapter_dir(ns)
    try:
        tensors = adapter_tensors_nonzero(adapter_dir)
        saved = read_adapter_config(adapter_dir)
    except (FileNotFoundError, ValueError) as err:
        fail(
            TRAINED_ADAPTER,
            f"{adapter_dir} holds no readable adapter ({type(err).__name__}: {err}).",
            "model.save_pretrained(ADAPTER_DIR) on the trained PeftModel.",
        )
    if "r" not in saved:
        fail(
            TRAINED_ADAPTER,
            f"{adapter_dir}/adapter_config.json is not a LoRA adapter config.",
            "model.save_pretrained(ADAPTER_DIR) on the PeftModel.",
        )
    lora_b = [nonzero for name, nonzero in tensors.items() if "lora_B" in name]
    if not any(lora_b):
        fail(
            TRAINED_ADAPTER,
            "every lora_B matrix in the saved adapter is zero: it was never trained "
            "(LoRA starts with B = 0, so an untrained adapter changes nothing).",
            "train (non-zero steps and learning rate) before model.save_pretrained(ADAPTER_DIR).",
        )
