"""Hidden checks of the PEFT course (instructor side): the shared core, and one folder per lab.

Hidden test cells import a lab's checks (`from checks.lab04_qlora import kernel as lab04_checks`), so
nbgrader feedback shows the verdict and its message, not the logic. Each check takes the notebook's
namespace (`globals()`), inspects the real objects and files the learner produced, and raises
`PeftMistake` naming the correction-guide mistake and the fix.

A lab's folder, `lab<lab id>/` (`lab04_qlora/` for lab 04_qlora), holds all of its checks:
- `kernel.py`: what the hidden test cells call, in the learner's kernel;
- `judges.py`: plain data in, verdict out, with the lab's rule titles; no torch at import;
- `files.py`: the checks that read what the lab saved on disk (a function of the lab's folders);
- `__init__.py`: `OUTSIDE`, the test cells the grader decides again outside the kernel (checks.outside).
The shared core is this module (the failure and the guide's rules), `evidence` (records as plain data),
`inspect_model` (a live model's manifest and the readers of it), `adapter_files` (the safetensors
reader and the adapter folder's rules), `hardware` (the dtype rule for the machine grading runs on)
and `outside` (the runner). Facts the labs state and the checks enforce live in `labutils.facts`.
"""

from __future__ import annotations

import re
from pathlib import Path

# The correction guide's five common mistakes (shared/seed), numbered as the guide numbers them.
GUIDE_MISTAKES = {
    1: "Wrong target_modules for model architecture",
    2: "LoRA rank too high (wasting resources) or too low (losing capacity)",
    3: "Not using prepare_model_for_kbit_training() with quantization",
    4: "Saving merged model when adapter should be separate",
    5: "Missing modules_to_save for task-specific heads",
}
# Rules of the guide's correct patterns that are not among the five numbered mistakes.
QLORA_CONFIG = "QLoRA pattern: 4-bit NF4 with double quantization and the right compute dtype"
TRAINABLE_SHARE = "Check print_trainable_parameters(): only LoRA weights train, well under 1%"
TRAINED_ADAPTER = "After training, save the adapter only: model.save_pretrained(dir)"
TASK_TYPE = "Correct pattern: the task_type of the model's task (task_type='CAUSAL_LM' for a causal LM)"


class PeftMistake(AssertionError):
    """A learner's PEFT mistake; the message names it and says how to fix it."""


def fail(rule: int | str, found: str, fix: str) -> None:
    """Raise a PeftMistake: which guide rule, what we found, and what to do instead."""
    title = f"Mistake {rule}: {GUIDE_MISTAKES[rule]}" if isinstance(rule, int) else rule
    raise PeftMistake(f"[{title}] {found} Fix: {fix}")


_SET_OF_NAMES = re.compile(r"\{'[^{}']*'(?:, '[^{}']*')*\}")


def error_text(err: Exception) -> str:
    """An exception's text with the sets of names it quotes in sorted order: peft's "Target modules {'query',
    'key'} not found" prints a set, whose order changes from one Python process to the next."""
    return _SET_OF_NAMES.sub(lambda m: "{" + ", ".join(sorted(m.group(0)[1:-1].split(", "))) + "}", str(err))


def need(ns: dict, name: str, kind: type | tuple | None = None, where: str = "the exercise cell"):
    """The learner's variable `name`, or a readable failure if it is missing or of the wrong type."""
    if name not in ns:
        raise PeftMistake(f"`{name}` is not defined. Fix: define `{name}` in {where} and run it.")
    value = ns[name]
    # by the object's own type: isinstance() would also ask the object's __class__, which a learner can define
    if kind is not None and not issubclass(type(value), kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise PeftMistake(
            f"`{name}` is a {type(value).__name__}, not a {names}. Fix: assign the real object to `{name}`."
        )
    return value


def unaltered(value, name: str):
    """`value`, a library's object the checks call methods of, with none of them replaced on the object itself (a
    function stored in its own attributes wins over its class's method, and would run inside the check)."""
    try:
        own = object.__getattribute__(value, "__dict__")
    except AttributeError:  # an object with __slots__ only: nothing stored on it can shadow a method
        own = {}
    replaced = sorted(k for k, v in dict.items(own) if callable(v) and not isinstance(v, type))
    if replaced:
        raise PeftMistake(
            f"`{name}.{replaced[0]}` is a function stored on the object itself, in place of its library's own "
            f"method. Fix: leave `{name}`'s methods as its library defines them (subclass it, or call a function of "
            "your own with it)."
        )
    return value


# "judges.NAME": the judge NAME of the lab's judges.py, on the one record named NAME that the test cell published
# (checks.evidence); "files.NAME": the check NAME of the lab's files.py, on the folders the lab's locked cells
# define (lab_paths), as they stood when that test cell ran. A lab's OUTSIDE maps its test cells' grade ids to
# these. Provenance: a lab's RECORDS names the locked cells that do the work and what the kernel guard records
# right after each (cell -> {name: [what, kind]}: `what` a name in the notebook or an attribute of one, `kind`
# one of checks.evidence.RECORDERS); its RECORDS_BEFORE, the same recorded just before the cell runs (what the work
# starts from); its FROM_RECORDS, the test cells judged again on such a record
# (grade id -> [cell, name, key]: key None judges the record itself, a key replaces that part of the test's); its
# WATCH, the locked cells inside whose work any call into the learner's code is held for review (cell -> what).
OUTSIDE_KINDS = ("judges", "files")


def lab_package(lab: str) -> str:
    """The package of a lab's checks: 04_qlora -> checks.lab04_qlora."""
    return f"checks.lab{lab}"


def outside_targets(lab: str) -> dict[str, str]:
    """The lab's test cells that the grader decides again outside the kernel: grade id -> "judges.NAME" or
    "files.NAME" (the lab package's OUTSIDE; {} for a lab without checks)."""
    return dict(lab_registry(lab, "OUTSIDE"))


def lab_registry(lab: str, name: str) -> dict:
    """One of a lab package's plain-data registries (OUTSIDE, RECORDS, RECORDS_BEFORE, FROM_RECORDS, WATCH); {} where it has none."""
    import importlib

    try:
        return dict(getattr(importlib.import_module(lab_package(lab)), name, {}))
    except ModuleNotFoundError as err:
        if err.name != lab_package(lab):
            raise
        return {}


MASTERS = Path(__file__).resolve().parents[1] / "source"


def lab_paths(lab: str) -> dict[str, Path]:
    """The folders a lab's locked cells define in its master (`OUTPUT_DIR = Path("x")`, `ADAPTER_DIR =
    OUTPUT_DIR / "adapter"`), relative to the notebook's folder: NAME_DIR -> path."""
    import ast
    import json

    def value(node, known):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return Path(node.value)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Path" and len(node.args) == 1:
            return value(node.args[0], known)
        if isinstance(node, ast.Name) and node.id in known:
            return known[node.id]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            left, right = value(node.left, known), value(node.right, known)
            return left / right if left is not None and right is not None else None
        return None

    cells = json.loads((MASTERS / lab / f"{lab}.ipynb").read_text())["cells"]
    known: dict[str, Path] = {}
    for cell in cells:
        if cell["cell_type"] != "code" or not cell.get("metadata", {}).get("nbgrader", {}).get("locked"):
            continue
        source = "".join(cell["source"])
        # shell and magic lines (the Colab set-up cell's `!pip`) are not Python: read them as `pass`
        lines = [
            line[: len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("!", "%")) else line
            for line in source.splitlines()
        ]
        for node in ast.parse("\n".join(lines)).body:
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                name = node.targets[0].id
                if name.endswith("_DIR") and (path := value(node.value, known)) is not None:
                    known[name] = path
    return known
