"""Lab 04's checks of the saved adapter folder: the guide's adapter-only rules, shared with the capstone
(checks.adapter_files), run in the kernel and again outside it on the lab's folders; and the saved adapter's
provenance: the tensors the lab's training loop ended with, which it changed (trained_by_the_loop). Standard library
only for a safetensors file (a legacy .bin needs torch to unpickle).
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from checks import TRAINED_ADAPTER, fail
from checks.adapter_files import (
    ADAPTER_WEIGHTS,
    adapter_folder,
    adapter_only_saved,
    differing_tensors,
    safetensors_header,
)
from checks.adapter_files import adapter_trained as adapter_file_trained

__all__ = ["adapter_only_saved", "adapter_trained", "saved_digests", "trained_by_the_loop"]

LOOP = "train_loop"  # the locked cell that trains the adapter (RECORDS_BEFORE and RECORDS in __init__.py)


def _as_float32(raw: bytes, dtype: str) -> bytes | None:
    """A saved tensor's little-endian bytes as float32's (what checks.evidence.tensor_digest hashes), or None for a
    dtype read here without torch."""
    if dtype == "F32":
        return bytes(raw)
    if dtype == "BF16":  # the upper half of a float32
        out = bytearray(2 * len(raw))
        out[2::4], out[3::4] = raw[0::2], raw[1::2]
        return bytes(out)
    if dtype == "F16":  # every float16 is a float32 exactly
        count = len(raw) // 2
        return struct.pack(f"<{count}f", *struct.unpack(f"<{count}e", raw))
    return None


def saved_digests(adapter_dir: Path) -> dict[str, str]:
    """{saved tensor name: digest} of the adapter in `adapter_dir`, as checks.evidence.tensor_digest hashes a tensor
    in memory (its values as float32 bytes): from the safetensors bytes without torch, or with torch for a legacy
    adapter_model.bin or a dtype struct cannot read."""
    path = Path(adapter_dir) / ADAPTER_WEIGHTS
    if path.is_file():
        header, data = safetensors_header(path), path.read_bytes()
        start, found = 8 + struct.unpack("<Q", data[:8])[0], {}
        for name, info in header.items():
            begin, end = info["data_offsets"]
            values = _as_float32(data[start + begin : start + end], info["dtype"])
            if values is None:
                break
            found[name] = hashlib.sha256(values).hexdigest()[:24]
        else:
            return found
    from peft.utils import load_peft_weights

    from checks.evidence import tensor_digest

    return {name: tensor_digest(t) for name, t in load_peft_weights(str(adapter_dir), device="cpu").items()}


def _recorded(name: str):
    """What the kernel guard recorded of the adapter around the training loop (checks.evidence.provenance_record)."""
    from checks.evidence import provenance_record

    return provenance_record(LOOP, name)


def trained_by_the_loop(adapter_dir: Path) -> None:
    """The adapter in `adapter_dir` is the one the lab's training loop trained: the loop changed the adapter's tensors,
    and the saved file holds exactly those it ended with. Judged from what the kernel guard recorded just before and
    right after the locked cell train_loop while the notebook was graded; a learner's own run records nothing, and
    passes."""
    start, end = _recorded("start"), _recorded("end")
    if start is None and end is None:
        return  # not graded here
    if start is None or end is None:
        fail(
            TRAINED_ADAPTER,
            "the lab's training loop did not run to its end, so no adapter the lab trained exists.",
            "run every cell of the notebook in order, from a fresh kernel.",
        )
    if start["tensors"] == end["tensors"]:
        fail(
            TRAINED_ADAPTER,
            "the lab's training loop changed none of the adapter's tensors (no step was taken), so whatever the "
            "saved adapter holds was not learned by training.",
            "set train_steps > 0 and a learning rate > 0, run the training loop, then save right after it.",
        )
    try:
        saved = saved_digests(adapter_dir)
    except (OSError, ValueError, KeyError, TypeError):
        return  # an unreadable file: the checks of the saved folder already say so
    trained = end["tensors"]
    differ = differing_tensors(saved, trained)
    if differ:
        fail(
            TRAINED_ADAPTER,
            f"the adapter in {adapter_dir} is not the one the lab's training loop ended with: {len(differ)} of its "
            f"{len(trained)} tensors differ (first: {differ[0]}).",
            "save the trained model right after training, unchanged: model.save_pretrained(ADAPTER_DIR).",
        )


def adapter_trained(ns: dict) -> None:
    """The saved adapter is the trained one: a LoRA config and at least one non-zero lora_B (checks.adapter_files),
    holding the tensors the lab's training loop ended with, which it changed (trained_by_the_loop)."""
    adapter_file_trained(ns)
    trained_by_the_loop(adapter_folder(ns))
