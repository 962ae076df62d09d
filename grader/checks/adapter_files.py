"""Checks of a saved adapter folder, read from disk with the standard library only.

No torch, peft or transformers import: the same functions run inside the learner's kernel (hidden
test cells) and, in a fresh process, outside it (checks/outside.py), where they take about a second
instead of the ten that importing torch costs for every graded submission.
"""

from __future__ import annotations

import array
import json
import math
import pickletools
import struct
import sys
import zipfile
from pathlib import Path

from checks import TRAINED_ADAPTER, fail, need

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# What model.save_pretrained(ADAPTER_DIR) writes, and what may honestly sit beside it: the tokenizer, and
# trainer.save_model's training_args.bin (a pickled TrainingArguments, no tensors: checked by content).
ADAPTER_FILES = {"adapter_config.json", ADAPTER_WEIGHTS, "adapter_model.bin", "README.md"}
SIDE_FILES = {
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
    "training_args.bin",
}
_PICKLED_TENSOR = ("_rebuild_tensor", "_rebuild_parameter", "numpy.core.multiarray", "numpy._core.multiarray")


def _parse_header(data: bytes, name: str) -> tuple[dict[str, dict], int]:
    """The one reader of the safetensors format: an 8-byte little-endian header length, then a JSON header
    (tensor name -> {dtype, shape, data_offsets}). Returns the header and where the tensors' bytes start."""
    try:
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + size])
    except (struct.error, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{name} is not a safetensors file") from err
    if not isinstance(header, dict):
        raise ValueError(f"{name} is not a safetensors file")
    header.pop("__metadata__", None)
    return header, 8 + size


def safetensors_header(path: Path) -> dict[str, dict]:
    """Tensor names -> {dtype, shape, data_offsets} of a safetensors file (its JSON header only)."""
    with open(path, "rb") as f:
        head = f.read(8)
        try:
            (size,) = struct.unpack("<Q", head)
            head += f.read(size)
        except (struct.error, MemoryError, OverflowError) as err:
            raise ValueError(f"{Path(path).name} is not a safetensors file") from err
    return _parse_header(head, Path(path).name)[0]


def _pickle_has_tensors(data: bytes) -> bool:
    """Whether a pickle (or torch's legacy run of several) rebuilds tensors or arrays, read opcode by
    opcode: it is never unpickled."""
    strings, start = [], 0
    for _ in range(5):  # torch's legacy format: magic number, protocol, sys info, then the objects
        end = None
        try:
            for opcode, arg, pos in pickletools.genops(data[start:]):
                if opcode.name in ("GLOBAL", "INST"):
                    strings.append(str(arg).replace(" ", "."))
                elif isinstance(arg, str):
                    strings.append(arg)
                if opcode.name == "BINPERSID" and "storage" in " ".join(strings[-6:]).lower():
                    return True
                if opcode.name == "STOP":
                    end = start + pos + 1
        except Exception:  # noqa: BLE001 - truncated, or not a pickle after all
            break
        if end is None or end >= len(data):
            break
        start = end
    return any(marker in x for x in strings for marker in _PICKLED_TENSOR)


def holds_tensors(path: Path) -> bool:
    """Whether a file holds tensors, whatever its name: safetensors, torch.save (zip or legacy pickle),
    NumPy, HDF5 or GGUF. Read from its bytes, never loaded."""
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(16)
    if head.startswith((b"\x93NUMPY", b"\x89HDF", b"GGUF")):
        return True
    if zipfile.is_zipfile(path):  # torch.save's format since 1.6, and .npz
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if any(n.endswith(".npy") for n in names) or any("/data/" in n for n in names):
                return True
            pickles = [n for n in names if n.endswith(".pkl")]
            return any(_pickle_has_tensors(archive.read(n)) for n in pickles[:2])
    if head[:1] == b"\x80":  # a pickle: torch.save's legacy format, or pickle.dump of a state dict
        return _pickle_has_tensors(path.read_bytes()[: 64 * 2**20])
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= 100 * 2**20:
        try:  # safetensors: an 8-byte header length, then a JSON header of tensors
            return bool(safetensors_header(path))
        except ValueError:
            return False
    return False


def _in_trainer_checkpoint(path: Path, root: Path) -> bool:
    """Inside a Trainer checkpoint (checkpoint-N with its trainer_state.json): the Trainer's own output."""
    folders = [root / parent for parent in path.relative_to(root).parents]
    return any(f.name.startswith("checkpoint-") and (f / "trainer_state.json").is_file() for f in folders)


def full_weight_files(root: Path) -> list[Path]:
    """Files anywhere under root that hold model weights rather than an adapter, in any format."""
    found = []
    root = Path(root)
    for path in root.rglob("*"):
        if not path.is_file() or _in_trainer_checkpoint(path, root):
            continue
        name = path.name
        if (
            name == "config.json"
            or name in WEIGHT_FILES
            or (name.startswith(("model-", "pytorch_model-")) and name.endswith((".safetensors", ".bin")))
        ):
            found.append(path)
        elif name in (ADAPTER_WEIGHTS, "adapter_model.bin"):
            continue  # an adapter's own weights: their tensor names are checked for lora_ below
        elif name.endswith(".safetensors") or holds_tensors(path):
            found.append(path)
    return sorted(found)


def unasked_files(adapter_dir: Path) -> list[Path]:
    """Files in the adapter folder that neither save_pretrained nor the tokenizer wrote."""
    return sorted(
        p
        for p in Path(adapter_dir).rglob("*")
        if p.is_file() and (p.name not in ADAPTER_FILES | SIDE_FILES or p.parent != Path(adapter_dir))
    )


def adapter_folder_clean(adapter_dir: Path) -> None:
    """Mistake 4, for the adapter folder itself: nothing in it but the adapter (and the tokenizer)."""
    weights = full_weight_files(adapter_dir)
    extra = [p for p in unasked_files(adapter_dir) if p not in weights]
    if weights or extra:
        shown = ", ".join(p.name for p in (weights + extra)[:3])
        what = "full model weights" if weights else "files the lab did not ask for"
        fail(
            4,
            f"the adapter folder {adapter_dir} holds {what} ({shown}) beside the adapter: whoever loads or "
            "shares it gets them too, and on a real model that is gigabytes.",
            "save only the adapter there with model.save_pretrained(ADAPTER_DIR) (the tokenizer may go with it); "
            "keep nothing else in the adapter folder.",
        )


def read_adapter_config(adapter_dir: Path) -> dict:
    return json.loads((Path(adapter_dir) / "adapter_config.json").read_text())


def _legacy_state(adapter_dir: Path) -> dict:
    """An adapter saved as adapter_model.bin (no safetensors file), unpickled with torch (weights only)."""
    legacy = Path(adapter_dir) / "adapter_model.bin"
    if not legacy.exists():
        raise FileNotFoundError(Path(adapter_dir) / ADAPTER_WEIGHTS)
    import torch

    return torch.load(legacy, map_location="cpu", weights_only=True)


def differing_tensors(saved: dict[str, str], trained: dict[str, str]) -> list[str]:
    """The adapter tensors whose digests differ between a saved file and what training ended with (a LoRA tensor on
    either side only counts too), sorted."""
    return [
        name
        for name in sorted(set(trained) | {n for n in saved if "lora_" in n})
        if saved.get(name) != trained.get(name)
    ]


def adapter_tensors_nonzero(adapter_dir: Path) -> dict[str, bool]:
    """Each saved adapter tensor's name and whether any of its values is non-zero.

    Reads the safetensors layout directly (an 8-byte header length, a JSON header of names and byte
    ranges, then the raw data); an adapter saved as .bin needs torch to unpickle.
    """
    path = Path(adapter_dir) / ADAPTER_WEIGHTS
    if not path.exists():
        import torch

        return {name: bool(torch.count_nonzero(t)) for name, t in _legacy_state(adapter_dir).items()}
    data = path.read_bytes()
    header, start = _parse_header(data, path.name)
    body = memoryview(data)[start:]
    return {
        name: _nonzero(body[info["data_offsets"][0] : info["data_offsets"][1]], info)
        for name, info in header.items()
    }


# Floating-point codes by width: a value is zero when every bit but the sign is (t * 0 gives -0.0 for a negative t).
_FLOAT_SIGN = {
    "F16": ("H", 0x7FFF),
    "BF16": ("H", 0x7FFF),
    "F32": ("I", 0x7FFFFFFF),
    "F64": ("Q", 0x7FFFFFFFFFFFFFFF),
}


def _nonzero(raw: memoryview, info: dict) -> bool:
    """Whether a saved tensor holds a value other than (plus or minus) zero, from its raw bytes."""
    code = _FLOAT_SIGN.get(info.get("dtype"))
    if code is None or len(raw) % struct.calcsize(code[0]):
        return any(raw)
    fmt, magnitude = code
    return any(value & magnitude for value in raw.cast("B").cast(fmt))


def adapter_folder(ns: dict) -> Path:
    """ADAPTER_DIR (from a notebook's namespace or a lab's paths), or a failure where nothing was saved there."""
    adapter_dir = Path(need(ns, "ADAPTER_DIR", (str, Path)))
    if not adapter_dir.is_dir():
        fail(TRAINED_ADAPTER, f"nothing was saved in {adapter_dir}.", "model.save_pretrained(ADAPTER_DIR).")
    return adapter_dir


def saved_adapter_dir(ns: dict, rule: int | str, found: str, fix: str) -> Path:
    """ADAPTER_DIR, or `rule`'s failure where no adapter_config.json was saved there (`found` names the folder as
    {adapter_dir}), or Mistake 4's where a whole model was saved there instead: the guard of every check that loads
    or reads the saved adapter."""
    adapter_dir = Path(need(ns, "ADAPTER_DIR", (str, Path)))
    if not (adapter_dir / "adapter_config.json").is_file():
        if adapter_dir.is_dir() and (weights := full_weight_files(adapter_dir)):
            fail(
                4,
                f"{adapter_dir} holds a whole model ({', '.join(p.name for p in weights[:3])}) and no adapter: a "
                "merged (or unwrapped) model was saved where the adapter belongs, gigabytes on a real model, and "
                "no longer an adapter that can be reloaded, swapped or shared.",
                "save the PeftModel itself: model.save_pretrained(ADAPTER_DIR); merge only for deployment, into "
                "another folder.",
            )
        fail(rule, found.format(adapter_dir=adapter_dir), fix)
    return adapter_dir


def adapter_only_saved(ns: dict, allowed: tuple[str, ...] = ("lora_",)) -> None:
    """ADAPTER_DIR holds the adapter only, and no full model weights lie anywhere in OUTPUT_DIR. An adapter
    tensor's name holds one of `allowed` (lab 09 adds the new tokens' trained rows)."""
    adapter_dir = adapter_folder(ns)
    output_dir = Path(ns.get("OUTPUT_DIR", adapter_dir))
    adapter_folder_clean(adapter_dir)
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
    not_lora = [k for k in tensors if not any(mark in k for mark in allowed)]
    if not_lora:
        fail(
            4,
            f"the adapter file holds {len(not_lora)} non-LoRA tensors (e.g. {not_lora[0]}): full base weights "
            "ride along (a targeted head or embedding is saved whole, or the model was merged).",
            "target only the projections and save the PeftModel itself, not a merged or unwrapped model.",
        )


def _values(raw: memoryview, info: dict) -> list[float] | None:
    """A saved floating-point tensor's values, from its raw little-endian bytes; None for another dtype."""
    dtype = info.get("dtype")
    raw = raw.cast("B")
    if dtype == "BF16" and len(raw) % 2 == 0:
        halves = array.array("H", bytes(raw))
        if sys.byteorder == "big":
            halves.byteswap()
        words = array.array("I", (h << 16 for h in halves))  # bfloat16 is float32's top half
        return list(memoryview(words).cast("B").cast("f"))
    codes = {"F16": "e", "F32": "f", "F64": "d"}
    if dtype not in codes or len(raw) % struct.calcsize(codes[dtype]):
        return None
    return list(struct.unpack(f"<{len(raw) // struct.calcsize(codes[dtype])}{codes[dtype]}", raw))


def _probe(n: int) -> list[float]:
    """A fixed vector of n values in [-1, 1): what the update is applied to (the same on every machine)."""
    return [((j * 2654435761 + 97) % 4294967296) / 2147483648.0 - 1.0 for j in range(n)]


def update_is_nonzero(a: list[float], a_shape: list[int], b: list[float], b_shape: list[int]) -> bool | None:
    """Whether LoRA's update B·A (lora_B times lora_A, flattened to matrices) is non-zero, judged on a fixed
    probe vector x: B·(A·x) is zero for every x only where B·A is (and a fixed x misses a non-zero B·A only by
    construction). Linear in the tensors' size, so a real model's adapter takes milliseconds per layer. None where
    the shapes do not pair up (not a plain LoRA pair)."""
    if not a_shape or not b_shape:
        return None
    rank = a_shape[0]
    width = len(a) // rank if rank else 0
    if rank == 0 or width * rank != len(a) or len(b) % rank or math.prod(b_shape[1:]) != rank:
        return None
    if not all(map(math.isfinite, a)) or not all(map(math.isfinite, b)):
        return True  # not a zero update (a diverged one is judged elsewhere)
    x = _probe(width)
    y = [math.fsum(a[i * width + j] * x[j] for j in range(width)) for i in range(rank)]
    z = [math.fsum(b[i * rank + k] * y[k] for k in range(rank)) for i in range(len(b) // rank)]
    scale = math.sqrt(math.fsum(v * v for v in a)) * math.sqrt(math.fsum(v * v for v in b)) * math.sqrt(width)
    return scale > 0 and max(abs(v) for v in z) > 1e-9 * scale


def adapter_updates(adapter_dir: Path) -> dict[str, bool | None]:
    """Each LoRA module of the saved adapter (its lora_B's name) and whether its update B·A is non-zero (None where
    its lora_A and lora_B do not pair up as matrices), read from the safetensors file's bytes (an adapter saved as
    .bin: with torch)."""
    path = Path(adapter_dir) / ADAPTER_WEIGHTS
    if not path.exists():
        state = _legacy_state(adapter_dir)
        shapes = {name: list(t.shape) for name, t in state.items()}

        def read(name):
            return state[name].detach().float().flatten().tolist()
    else:
        data = path.read_bytes()
        header, start = _parse_header(data, path.name)
        body = memoryview(data)[start:]
        shapes = {name: list(info.get("shape", [])) for name, info in header.items()}

        def read(name):
            begin, end = header[name]["data_offsets"]
            return _values(body[begin:end], header[name])

    found = {}
    for name in shapes:
        if "lora_B" not in name:
            continue
        partner = name.replace("lora_B", "lora_A")
        a = read(partner) if partner in shapes else None
        b = read(name) if a is not None else None
        found[name] = (
            None if a is None or b is None else update_is_nonzero(a, shapes[partner], b, shapes[name])
        )
        if found[name]:
            break  # one non-zero update is enough to call the adapter trained
    return found


def adapter_trained(ns: dict) -> None:
    """The saved adapter is the trained one: a LoRA config, at least one non-zero lora_B, and an update B·A that is
    not zero (a lora_A zeroed beside a trained lora_B changes nothing either)."""
    adapter_dir = adapter_folder(ns)
    try:
        tensors = adapter_tensors_nonzero(adapter_dir)
        saved = read_adapter_config(adapter_dir)
        updates = adapter_updates(adapter_dir)
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
    # Judged on the layers whose lora_B is non-zero; a pair this reader cannot multiply (another dtype or shape)
    # keeps the lora_B verdict above.
    judged = [nonzero for name, nonzero in updates.items() if tensors.get(name)]
    if judged and all(nonzero is False for nonzero in judged):
        fail(
            TRAINED_ADAPTER,
            "the saved adapter's update B·A is zero in every layer (its lora_A matrices are zero where lora_B "
            "is not): it changes nothing, so it is not the trained adapter.",
            "save the trained PeftModel itself, unchanged: model.save_pretrained(ADAPTER_DIR).",
        )
