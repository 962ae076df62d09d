"""One bf16 rule for the whole course (issue 31): the labs, the doctor and the hidden checks read it from
one source, and a lab that states another rule fails here.

The rule is labutils.facts (compute_dtype_name, training_precision, training_dtype_name); the doctor's
detect_hardware() applies it to the machine, and the helpers the labs call (labutils.compute_dtype,
training_dtype, precision_flags) and the hidden checks (grader/checks/hardware.py) read that.

Two kinds of test, chosen to be robust rather than to match spellings:

* Behaviour. Each lab's own statements that choose a dtype (every top-level assignment in its master that
  calls one of the helpers) are *executed* on simulated machines (labutils.machines patches what torch
  answers): a Colab T4 must give float16 (fp16 mixed precision), an A100 bfloat16, a CPU what the rule says.
  A statement rewritten with the trap (`torch.cuda.is_bf16_supported()` says True on a simulated T4 as on a
  real one) or a hard-coded dtype gives the wrong answer on one of them, however it is spelled.
* Static, over every master's code cells, read with `ast` (comments and strings never match). (a) Nowhere may a
  lab ask `torch.cuda.is_bf16_supported()` without `including_emulation=False`: that question states another
  rule (emulated bf16 counts). Only lab 00's cells that show the trap on purpose may. (b) Outside the exercises
  (where the learner writes the rule and the hidden check grades it by labutils.facts) and outside lab 00 (which
  teaches the rule), a lab may not decide the dtype itself: no `is_bf16_supported` / `get_device_capability`
  call, no `a if ... else b` between dtypes, no 16-bit dtype hard-coded into a name, `bnb_4bit_compute_dtype=`
  or a Trainer flag. A deliberate storage dtype (lab 05's deployment copy) is listed in STORAGE with its reason.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch

import labutils
from labutils import facts
from labutils.machines import MACHINES, simulated

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "grader" / "source"
LABS = sorted(p.parent.name for p in SOURCE.glob("*/*.ipynb") if p.stem == p.parent.name)
HELPERS = {"compute_dtype", "training_dtype", "precision_flags"}
ON_THE_HELPER = ("01_lora_anatomy", "05_save_load_merge", "08_adapter_life")  # labs whose dtype comes from it
DTYPES = {"bfloat16", "float16", "half", "float32", "float", "bf16", "fp16"}
SIXTEEN_BIT = {"bfloat16", "float16", "half"}
TRAP_DEMOS = {
    ("00_setup", "example_simulated"),
    ("00_setup", "mistake_choosers"),
}  # the trap, shown on purpose
STORAGE = {  # (lab, name): a 16-bit dtype that is a storage choice, not the hardware's compute dtype
    ("05_save_load_merge", "DEPLOY_DTYPE"): "the merged deployment copy is stored in bf16 on every machine",
}
# Labs whose set-up or worked-example cells still decide the dtype themselves; each passes once it calls the
# helper (the test then reports XPASS: remove it from here).
_MAGIC = re.compile(r"^(\s*)[!%].*$", re.MULTILINE)  # IPython shell and magic lines: not Python


def cells(lab: str):
    """(grade_id, syntax tree, is an exercise solution) for each code cell of a lab's master."""
    nb = json.loads((SOURCE / lab / f"{lab}.ipynb").read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        nbgrader = cell["metadata"].get("nbgrader", {})
        source = _MAGIC.sub(r"\1pass", "".join(cell["source"]))
        yield nbgrader.get("grade_id", ""), ast.parse(source), bool(nbgrader.get("solution"))


def _name(func: ast.AST) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _calls(node: ast.AST, names: set[str]) -> list[ast.Call]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Call) and _name(n.func) in names]


def _is_dtype(node: ast.AST, names: set[str] = DTYPES) -> bool:
    """`torch.bfloat16` and the like (also "bfloat16" as a string)."""
    if isinstance(node, ast.Attribute):
        return node.attr in names and isinstance(node.value, ast.Name) and node.value.id == "torch"
    return isinstance(node, ast.Constant) and node.value in names


# ------------------------------------------------------------------------------ the helpers


@pytest.mark.parametrize("key", list(MACHINES))
def test_the_helpers_follow_the_rule_on_every_simulated_machine(key):
    machine = MACHINES[key]
    with simulated(machine):
        assert labutils.compute_dtype() == machine.recommended
        assert labutils.training_dtype() == machine.training
        assert labutils.precision_flags() == facts.training_precision(machine.cuda, machine.bf16_native)
    t4_like = machine.cuda and machine.capability < (8, 0)
    if t4_like:  # spelled out, not derived: a T4 and a V100 compute in float16 and train with fp16
        assert (machine.recommended, machine.training) == (torch.float16, torch.float16)
        assert facts.training_precision(True, False) == {"fp16": True, "bf16": False}
    elif machine.cuda:
        assert (machine.recommended, machine.training) == (torch.bfloat16, torch.bfloat16)
        assert facts.training_precision(True, True) == {"fp16": False, "bf16": True}
    else:
        assert (machine.recommended, machine.training) == (torch.bfloat16, torch.float32)
        assert facts.training_precision(False, False) == {"fp16": False, "bf16": False}


@pytest.mark.parametrize("key", ["colab_t4", "a100", "cpu"])
def test_the_hidden_checks_read_the_same_rule(key, hidden_check, monkeypatch):
    monkeypatch.delenv("PEFT_COURSE_HARDWARE", raising=False)  # detect, as a grading kernel does
    hardware = hidden_check("hardware")
    with simulated(MACHINES[key]):
        assert hardware.expected_compute_dtype() == str(labutils.compute_dtype()).removeprefix("torch.")
        assert hardware.expected_precision() == labutils.precision_flags()


# ------------------------------------------------------------------------------ each lab's own choice


def _dtype_choices(lab: str):
    """The lab's import statements, and its top-level assignments that call a dtype helper."""
    imports, choices = [], []
    for grade_id, tree, _ in cells(lab):
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                imports.append(node)
            elif isinstance(node, ast.Assign) and _calls(node.value, HELPERS):
                choices.append((grade_id, node))
    return imports, choices


def _answer(value):
    """What a choice decided: a dtype, a BitsAndBytesConfig's compute dtype, or Trainer flags."""
    if hasattr(value, "bnb_4bit_compute_dtype"):
        return value.bnb_4bit_compute_dtype
    return value


@pytest.mark.parametrize("lab", ON_THE_HELPER)
def test_each_labs_dtype_choice_on_a_t4_an_a100_and_a_cpu(lab):
    """Runs the lab's own statements: float16 / fp16 on a T4, bfloat16 / bf16 on an A100, the rule on a CPU."""
    imports, choices = _dtype_choices(lab)
    assert choices, f"{lab} chooses no dtype with labutils.compute_dtype / training_dtype / precision_flags"
    namespace: dict = {}
    exec(compile(ast.Module(body=imports, type_ignores=[]), lab, "exec"), namespace)  # the lab's own imports
    for key in ("colab_t4", "a100", "cpu"):
        machine = MACHINES[key]
        for grade_id, node in choices:
            with simulated(machine, namespace):
                exec(
                    compile(ast.Module(body=[node], type_ignores=[]), f"{lab}:{grade_id}", "exec"), namespace
                )
            (target,) = node.targets
            got = _answer(namespace[target.id])
            helper = next(_name(c.func) for c in _calls(node.value, HELPERS))
            if isinstance(got, dict):
                want = facts.training_precision(machine.cuda, machine.bf16_native)
            else:
                want = machine.recommended if helper == "compute_dtype" else machine.training
            if key == "colab_t4":
                assert want in (torch.float16, {"fp16": True, "bf16": False})
            elif key == "a100":
                assert want in (torch.bfloat16, {"fp16": False, "bf16": True})
            assert got == want, f"{lab}, cell {grade_id}: {target.id} is {got} on {machine.label}, not {want}"


# ------------------------------------------------------------------------------ no other rule, anywhere


def trap_calls(tree: ast.AST) -> list[int]:
    """Lines that ask torch.cuda.is_bf16_supported() without including_emulation=False."""
    lines = []
    for call in _calls(tree, {"is_bf16_supported"}):
        emulation = {k.arg: k.value for k in call.keywords}.get("including_emulation")
        if not (isinstance(emulation, ast.Constant) and emulation.value is False):
            lines.append(call.lineno)
    return lines


@pytest.mark.parametrize("lab", LABS)
def test_no_lab_asks_the_trap_question(lab):
    """Plain torch.cuda.is_bf16_supported() counts emulated bf16 (True on a T4): another bf16 rule."""
    found = [
        f"cell {grade_id}, line {line}"
        for grade_id, tree, _ in cells(lab)
        if (lab, grade_id) not in TRAP_DEMOS
        for line in trap_calls(tree)
    ]
    assert not found, f"{lab} asks is_bf16_supported() without including_emulation=False: {found}"


def decisions(tree: ast.AST, lab: str) -> list[str]:
    """Where code decides a dtype or precision flag for the hardware by itself."""
    found = [
        f"line {call.lineno}: asks torch {_name(call.func)}()"
        for call in _calls(tree, {"is_bf16_supported", "get_device_capability"})
    ]
    for node in ast.walk(tree):
        if isinstance(node, ast.IfExp) and _is_dtype(node.body) and _is_dtype(node.orelse):
            found.append(f"line {node.lineno}: chooses between dtypes itself")
        elif isinstance(node, ast.Assign) and _is_dtype(node.value, SIXTEEN_BIT):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if not all((lab, name) in STORAGE for name in names):
                found.append(f"line {node.lineno}: hard-codes {names} to a 16-bit dtype")
        elif isinstance(node, ast.keyword) and node.arg == "bnb_4bit_compute_dtype" and _is_dtype(node.value):
            found.append(f"line {node.value.lineno}: hard-codes bnb_4bit_compute_dtype")
        elif (
            isinstance(node, ast.keyword)
            and node.arg in ("fp16", "bf16")
            and isinstance(node.value, ast.Constant)
            and node.value.value is True
        ):
            found.append(f"line {node.value.lineno}: hard-codes the Trainer flag {node.arg}=True")
    return found


def own_decisions(lab: str) -> list[str]:
    """decisions() in a lab's code cells, except its exercises: there the learner writes the rule, and the
    hidden check grades it by labutils.facts."""
    return [
        f"cell {grade_id}, {where}"
        for grade_id, tree, solution in cells(lab)
        if not solution
        for where in decisions(tree, lab)
    ]


@pytest.mark.parametrize(
    "lab",
    [
        lab
        for lab in LABS
        if lab != "00_setup"  # lab 00 teaches the rule: its exercise and its shown mistakes decide on purpose
    ],
)
def test_no_lab_decides_the_dtype_by_itself(lab):
    found = own_decisions(lab)
    assert not found, (
        f"{lab} decides the dtype for the hardware by itself instead of calling labutils.compute_dtype() "
        f"(training_dtype(), precision_flags()): {found}"
    )


def test_a_simulated_t4_springs_the_trap():
    """The behaviour test catches the trap however it is written: a simulated T4 answers like a real one."""
    namespace = {"torch": torch}
    with simulated(MACHINES["colab_t4"], namespace):
        exec("trap = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16", namespace)
        exec("native = torch.cuda.is_bf16_supported(including_emulation=False)", namespace)
    assert namespace["trap"] == torch.bfloat16 and namespace["native"] is False


def test_the_static_rules_catch_what_issue_31_found():
    """The rules above flag the choices the issue reported, as labs 01, 05 and 08 wrote them, and pass the
    helper and a storage dtype."""
    lab01 = "cuda_without_bf16 = torch.cuda.is_available() and not torch.cuda.is_bf16_supported()"
    assert trap_calls(ast.parse(lab01)) == [1]
    assert not trap_calls(ast.parse("torch.cuda.is_bf16_supported(including_emulation=False)"))
    for source in (
        lab01,
        "DTYPE = torch.bfloat16 if torch.cuda.is_available() else torch.float32",  # lab 08
        "DTYPE = torch.bfloat16",  # lab 05
        "BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)",  # the guide, as is
        "TrainingArguments(output_dir='out', bf16=True)",
    ):
        assert decisions(ast.parse(source), "05_save_load_merge"), source
    for source in (
        "DTYPE = labutils.compute_dtype()",
        "DEPLOY_DTYPE = torch.bfloat16",
        "base = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)",
    ):
        assert not decisions(ast.parse(source), "05_save_load_merge"), source
