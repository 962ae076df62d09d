"""Evidence as plain data: a check that reads the learner's objects, judged the same way in and out of the kernel.

Such a check comes in two halves, in its lab's folder (checks/labNN_topic/):
- in `kernel.py`, the function the hidden test cell calls with the notebook's namespace. It turns the objects it
  needs into a record of plain data (a config's fields; a model's manifest of module kinds, parameter dtypes,
  `requires_grad` and the checkpointing flag: `checks.inspect_model.manifest`), publishes the record as an
  output of the test cell under its judge's name, and judges it there, so the learner sees the verdict at once;
- in `judges.py`, the judge of that name, which decides from the record alone, raising PeftMistake. The lab's
  `OUTSIDE` names it ("judges.NAME") for the grader.

The record travels as a display_data output (`MIME`), which nbclient, in the trusted process, writes into
the autograded notebook as it arrives: no later cell can change it. The grader then runs the same judge on
that record in a fresh process (`checks.outside`), so a cell that tampered with the checks inside the
kernel, even while the test cell ran, cannot change the verdict. Only JSON crosses the boundary, never a
pickle. A test cell must hold exactly one record per check: none (the check never got as far as
recording) or two (something else published into the cell) and the check cannot be verified.
"""

from __future__ import annotations

import enum
import json
import numbers
from pathlib import PurePath

MIME = "application/vnd.peft-course.evidence+json"
RECORDED_KEY = "peft_course_recorded"  # a locked cell's metadata: what the kernel guard recorded after it ran


# The libraries whose objects' text (a dtype, a path, an enum of peft's) a record may quote: str() of anything
# else could run the learner's code, inside a check or the grader's own recording.
TEXT_FROM = ("torch", "numpy", "pathlib", "peft", "transformers", "bitsandbytes", "trl", "accelerate")


def plain(value):
    """`value` as JSON-safe data, read without running the learner's code: numbers, strings and built-in
    containers through their base types' own methods (a subclass's overrides never run), enums as their
    values, numpy numbers as Python's, a library's dtypes and paths as text, sets sorted; any other object
    as its type's name."""
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if issubclass(kind, enum.Enum):
        return plain(object.__getattribute__(value, "_value_"))
    for base in (int, float, str):
        if issubclass(kind, base):
            return getattr(base, f"__{base.__name__}__")(value)  # int.__int__, float.__float__, str.__str__
    if issubclass(kind, dict):
        return {key_text(k): plain(v) for k, v in dict.items(value)}
    if issubclass(kind, (set, frozenset)):
        items = set.__iter__(value) if issubclass(kind, set) else frozenset.__iter__(value)
        return sorted((plain(v) for v in items), key=str)
    if issubclass(kind, list):
        return [plain(v) for v in list.__iter__(value)]
    if issubclass(kind, tuple):
        return [plain(v) for v in tuple.__iter__(value)]
    module = (kind.__module__ or "").split(".")[0]
    if module == "numpy" and issubclass(kind, numbers.Integral):
        return int(value)
    if module == "numpy" and issubclass(kind, numbers.Real):
        return float(value)
    if issubclass(kind, PurePath):
        return PurePath.__str__(value)
    if module in TEXT_FROM:
        text = str(value)
        return text.removeprefix("torch.") if module == "torch" else text[:200]
    return f"<{kind.__qualname__}>"


def key_text(key) -> str:
    """A dict key as a record's text (a str subclass read as the str it holds)."""
    value = plain(key)
    return value if type(value) is str else str(value)


def publish(check: str, record: dict) -> dict:
    """Show `record` to the grader as an output of the running test cell; return it as the judge sees it."""
    data = json.loads(json.dumps(plain(record)))  # the judge reads exactly what the grader will read
    from IPython.core.interactiveshell import InteractiveShell

    if InteractiveShell.initialized():  # in a notebook kernel (not when a unit test calls the check)
        InteractiveShell.instance().display_pub.publish(
            data={
                MIME: {"check": check, "record": data},
                "text/plain": f"[evidence for the grader: {check}]",
            },
            metadata={},
        )
    return data


def model_record(ns: dict, check: str, kinds: tuple, where: str = "the exercise cell") -> dict:
    """Publish the manifest of the learner's `model` (one of `kinds`) as `check`'s record and return it as the
    judge reads it."""
    from checks import need
    from checks.inspect_model import manifest

    return publish(check, manifest(need(ns, "model", kinds, where=where), ns.get("lora_config")))


def records(cell: dict, check: str) -> list[dict]:
    """The records of `check` among a notebook cell's outputs (a dict as nbformat stores it)."""
    found = []
    for output in cell.get("outputs", []):
        bundle = output.get("data", {}).get(MIME) if output.get("output_type") == "display_data" else None
        if (
            isinstance(bundle, dict)
            and bundle.get("check") == check
            and isinstance(bundle.get("record"), dict)
        ):
            found.append(bundle["record"])
    return found


# How the kernel guard records what a locked cell did the work with (peft_grader.kernel_guard.record), by kind:
# plain data the judges read, as the test cells' records are.
def _manifest(model) -> dict:
    from checks.inspect_model import manifest

    return plain(manifest(model))


def _seed_losses(results) -> dict[str, list[float]]:
    """{variant: [final loss per seed]} from the comparison's `results`, read as plain data."""
    found = {}
    for name, entry in plain(results).items():
        losses = entry.get("seed_losses") if type(entry) is dict else None
        if type(losses) is not list or not losses or any(type(x) not in (int, float) for x in losses):
            raise TypeError(f"results[{name!r}]['seed_losses'] is not a list of numbers")
        found[name] = [float(x) for x in losses]
    return found


def _precision(args) -> dict[str, bool]:
    """A Trainer's own fp16 and bf16 flags, read from the arguments object itself (no property of the learner's)."""
    fields = object.__getattribute__(args, "__dict__")
    return {flag: bool(plain(fields.get(flag))) for flag in ("fp16", "bf16")}


def tensor_digest(tensor) -> str:
    """A tensor's values, exactly, as a short hash (float32 bytes: the same in memory and in a saved file)."""
    import hashlib

    return hashlib.sha256(tensor.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:24]


def _adapter_state(model) -> dict:
    """peft's own PeftModel's adapter "default" as save_pretrained writes it: {saved tensor name: digest}, read from
    the modules' own tables (no method of the model runs), and whether every lora_B is zero (an adapter no step has
    trained: peft starts B at zero)."""
    import torch
    from peft import PeftModel

    from checks.inspect_model import parameters

    kind = type(model)
    if not issubclass(kind, PeftModel) or not (kind.__module__ or "").startswith("peft."):
        raise TypeError(f"{kind.__qualname__} is not one of peft's own PeftModel classes")
    with torch._C.DisableTorchFunction():  # a tensor subclass's __torch_function__ does not answer either
        tensors = {
            name.replace(".default.", "."): p
            for name, p in parameters(model)
            if "lora_" in name and ".default." in name
        }
        if not tensors:
            raise LookupError("the model has no LoRA adapter named default")
        return {
            "tensors": {name: tensor_digest(t) for name, t in tensors.items()},
            "untrained": all(not torch.Tensor.any(t) for name, t in tensors.items() if "lora_B" in name),
        }


def _token_rows(dataset) -> list[list[int]]:
    """A datasets.Dataset's `input_ids`, row by row (the Trainer's own training set), read from its Arrow table and
    indices: no transform or format of the learner's runs (a dataset with one is not recorded)."""
    import datasets

    if type(dataset) is not datasets.Dataset:
        raise TypeError(f"{type(dataset).__qualname__} is not a datasets.Dataset")
    fields = object.__getattribute__(dataset, "__dict__")
    if fields.get("_format_type") is not None or (fields.get("_format_kwargs") or {}).get("transform"):
        raise TypeError("the dataset has a format or transform set")
    column = fields["_data"].column("input_ids").to_pylist()
    indices = fields.get("_indices")
    order = range(len(column)) if indices is None else indices.column(0).to_pylist()
    return [[int(i) for i in column[k]] for k in order]


RECORDERS = {
    "manifest": _manifest,  # a model: the manifest its judges read (checks.inspect_model)
    "seed_losses": _seed_losses,
    "precision": _precision,  # a Trainer's arguments
    "value": plain,
    "adapter_state": _adapter_state,  # a PeftModel: its adapter's tensors as saved, and whether it has trained
    "token_rows": _token_rows,  # a Trainer's training set: what it trained on
}


# Outside the kernel, where the grader judges a lab's files again (checks.outside): what the graded notebook's
# locked cells recorded, read from its metadata; None in the kernel, where the guard keeps them.
notebook_records: dict | None = None


def locked_record(cell: str, name: str):
    """What the locked cell `cell` recorded under `name` while this notebook was graded, in the kernel or outside
    it; None where nothing was recorded (not graded, or that cell has not run). A record may be
    {"unrecorded": why} (the guard could not read it) or {"restarted": True} (the kernel restarted after a crash)."""
    if notebook_records is not None:
        return notebook_records.get(cell, {}).get(name)
    return recorded(cell, name)


def provenance_record(cell: str, name: str):
    """A record of a lab's locked cells (RECORDS and RECORDS_BEFORE) that provenance rests on: None where nothing was
    recorded (not graded); LookupError where the guard could not read it, or a kernel restarted after a crash lost it
    (the provenance cannot be verified: it fails closed)."""
    value = locked_record(cell, name)
    if isinstance(value, dict) and value.get("restarted"):
        raise LookupError(
            f"the kernel restarted before the locked cell {cell} ran, so its {name} was not recorded"
        )
    if isinstance(value, dict) and "unrecorded" in value:
        raise LookupError(f"the locked cell {cell} recorded no {name} ({value['unrecorded']})")
    return value


def recorded(cell: str, name: str):
    """What the locked cell `cell` recorded under `name` while this notebook was graded (the kernel guard keeps
    it), or None: not graded (a learner's own run, the live check), or that cell has not run yet."""
    import sys

    guard = sys.modules.get("peft_grader.kernel_guard")
    return None if guard is None else guard.recorded(cell, name)
