"""Hidden checks of the PEFT course (instructor side).

Hidden test cells import these functions, so nbgrader feedback shows the verdict and its message,
not the logic. Each check takes the notebook's namespace (`globals()`), inspects the real objects
and files the learner produced, and raises `PeftMistake` naming the correction-guide mistake and
the fix. One function per mistake, named after it. Where the evidence is on disk (ON_DISK) or can be
recorded as plain data (FROM_EVIDENCE: evidence.py records it, judges.py decides), the grader decides
the check again outside the learner's kernel (outside.py).
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
    if kind is not None and not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise PeftMistake(
            f"`{name}` is a {type(value).__name__}, not a {names}. Fix: assign the real object to `{name}`."
        )
    return value


# What each lab leaves on disk, re-checked outside the kernel (checks/outside.py): per test cell the on-disk
# check ("module.function" of this package), given the paths the lab's locked set-up cell defines
# (lab_paths: read from the master, so the folders are written once). Most use the standard library only;
# deploy_verify (lab 05), capstone.validation_improved (lab 07) and chat_files.generation_stops (lab 09) load torch to merge or evaluate the
# saved adapter themselves.
ON_DISK = {
    "04_qlora": {
        "test_adapter_only": "adapter_files.adapter_only_saved",
        "test_adapter_trained": "adapter_files.adapter_trained",
    },
    "05_save_load_merge": {
        "test_adapter_only": "deploy_files.adapter_only_saved",
        "test_deploy_copy": "deploy_files.deploy_copy_saved",
        "test_merged_outputs": "deploy_verify.deploy_matches_adapter",
    },
    "06_task_heads": {"test_head_saved": "head_files.head_saved"},
    "07_capstone": {
        "test_adapter_only": "adapter_files.adapter_only_saved",
        "test_adapter_trained": "adapter_files.adapter_trained",
        "test_val_improved": "capstone.validation_improved",
    },
    "09_chat_sft": {
        "test_adapter_saved": "chat_files.adapter_saved",
        "test_stops": "chat_files.generation_stops",
    },
}
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


# The in-memory checks decided again outside the kernel, from the plain-data record their test cell
# published (checks.evidence): grade_id -> the record's name, which is also its judge's in checks.judges.
FROM_EVIDENCE = {
    "00_setup": {"test_bnb_config": "bnb_config_here"},
    "01_lora_anatomy": {"test_wrapped": "course_model_wrapped", "test_trainable_share": "course_model_share"},
    "02_target_modules": {"test_lora_model": "bert_lora_model"},
    "03_rank_alpha": {
        "test_chosen_rank": "chosen_rank",
        "test_chosen_alpha": "chosen_alpha",
        "test_chosen_targets": "chosen_targets",
    },
    "04_qlora": {
        "test_bnb_config": "quantization_config",
        "test_loaded_4bit": "loaded_in_4bit",
        "test_kbit_prepared": "kbit_prepared",
        "test_lora_config": "llama_lora_config",
        "test_trainable_share": "trainable_share",
    },
    "06_task_heads": {"test_lora_config": "bert_lora_config", "test_head_wrapped": "head_wrapped"},
    "07_capstone": {
        "test_bnb_config": "quantization_config",
        "test_loaded_4bit": "loaded_in_4bit",
        "test_kbit_prepared": "kbit_prepared",
        "test_lora_config": "llama_lora_config",
        "test_trainable_share": "trainable_share",
        "test_precision": "precision_flags",
    },
    "08_adapter_life": {
        "test_resume": "resumed_adapter",
        "test_belongs": "base_match",
        "test_multi": "adapter_set",
        "test_base_only": "base_only_outputs",
        "test_blend": "weighted_blend",
    },
    "09_chat_sft": {
        "test_tokens": "chat_tokens",
        "test_template": "chat_template_mask",
        "test_lora_config": "chat_lora",
        "test_labels": "sft_labels",
        "test_precision": "precision_flags",
    },
    "10_variants_precision": {
        "test_variants": "lora_variants",
        "test_choice": "variant_choice",
        "test_memory": "memory_formula",
        "test_fp16": "fp16_ready",
        "test_merge": "merge_fidelity",
    },
}
