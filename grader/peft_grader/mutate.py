"""Mutation testing of the hidden checks (`labutils mutate LAB...`): how many wrong answers they catch.

Each lab's reference solution cells are changed one site at a time by operators on Python's syntax tree
(`ast`): PEFT-aware ones (a rank or alpha changed, a target module dropped or swapped for GPT-2's, the
quantization type, double quantization or compute dtype changed, a keyword such as `quantization_config` or
`task_type` removed, `is_trainable` flipped, a step count or learning rate set to 0,
`prepare_model_for_kbit_training` removed) and generic ones (a comparison or arithmetic operator swapped, a
statement removed, a truth value flipped). Every mutant is graded through the real pipeline (`grading.grade`:
sandbox, warm kernels, the checks outside the kernel), then sorted:

- killed: a hidden check lost points with a PeftMistake naming the rule it broke, and, for a PEFT-aware
  mutant, naming the mistake its operator makes (INTENDED);
- killed elsewhere: only other rules were named (caught, but not by the check meant for it);
- survived: full marks, so the checks let it through: a missed mistake (fix the check, add a catalogue entry)
  or an equivalent answer (say so, with a reason, in grader/mutation_triage.toml: then "equivalent");
- broken: the mutant crashed or was not graded, so it proves nothing about the checks.

The mutation score is killed / (killed + killed elsewhere + survived).
"""

from __future__ import annotations

import ast
import copy
import difflib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labutils.errors import CourseError

PEFT, GENERIC = "peft", "generic"


@dataclass
class Mutant:
    lab: str
    cell: str  # the solution cell's grade_id
    operator: str
    kind: str  # PEFT or GENERIC
    change: str  # what changed, in words
    source: str  # the mutated cell
    original: str
    index: int = 0  # its place among the cell's mutants

    @property
    def student(self) -> str:
        return f"mutant-{self.lab}-{self.cell}-{self.index}"

    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                self.original.splitlines(True), self.source.splitlines(True), "reference", "mutant", n=1
            )
        )


@dataclass
class Outcome:
    mutant: Mutant
    verdict: str  # one of VERDICTS
    score: float
    max_score: float
    said: list[str] = field(default_factory=list)  # the messages of the checks that lost points


# ---------------------------------------------------------------------------------------------------------
# Operators. Each takes a node and returns [(change in words, replacement node or None to remove it)].
# ---------------------------------------------------------------------------------------------------------
def _number(node) -> float | None:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    return None


def _rank_or_alpha(keyword: ast.keyword):
    value = _number(keyword.value)
    if keyword.arg not in ("r", "lora_alpha") or value is None:
        return []
    options = {value * 2, value // 2 if isinstance(value, int) else value / 2, 128} - {value}
    return [
        (f"{keyword.arg}={value} -> {new}", ast.keyword(keyword.arg, ast.Constant(new))) for new in options
    ]


def _targets(keyword: ast.keyword):
    if keyword.arg != "target_modules" or not isinstance(keyword.value, (ast.List, ast.Tuple)):
        return []
    names = keyword.value.elts
    found = []
    for i, element in enumerate(names):
        if isinstance(element, ast.Constant) and len(names) > 1:
            rest = [copy.deepcopy(e) for j, e in enumerate(names) if j != i]
            found.append((f"target {element.value!r} dropped", ast.keyword(keyword.arg, ast.List(rest))))
    found.append(
        ("targets swapped for GPT-2's c_attn", ast.keyword(keyword.arg, ast.List([ast.Constant("c_attn")])))
    )
    return found


_REPLACED = {
    "bnb_4bit_quant_type": lambda v: ast.Constant("fp4" if getattr(v, "value", "") == "nf4" else "nf4"),
    "bnb_4bit_compute_dtype": lambda v: ast.parse("torch.float32", mode="eval").body,
    "learning_rate": lambda v: ast.Constant(0),
    "steps": lambda v: ast.Constant(0),
    "max_steps": lambda v: ast.Constant(0),
}
_FLIPPED = ("bnb_4bit_use_double_quant", "is_trainable", "load_in_4bit", "use_rslora", "use_dora")
_REMOVED = ("quantization_config", "modules_to_save", "task_type", "adapter_name", "target_modules")


def _keyword(keyword: ast.keyword):
    found = _rank_or_alpha(keyword) + _targets(keyword)
    if keyword.arg in _REPLACED:
        new = _REPLACED[keyword.arg](keyword.value)
        found.append((f"{keyword.arg} -> {ast.unparse(new)}", ast.keyword(keyword.arg, new)))
    if (
        keyword.arg in _FLIPPED
        and isinstance(keyword.value, ast.Constant)
        and type(keyword.value.value) is bool
    ):
        found.append(
            (f"{keyword.arg} flipped", ast.keyword(keyword.arg, ast.Constant(not keyword.value.value)))
        )
    if keyword.arg in _REMOVED:
        found.append((f"{keyword.arg}= removed", None))
    return found


def _called(call: ast.Call) -> str:
    """The name a call calls: `f(...)` and `module.f(...)` both give "f"."""
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")


def _prepare_removed(call: ast.Call):
    if _called(call) == "prepare_model_for_kbit_training" and call.args:
        return [("prepare_model_for_kbit_training removed", copy.deepcopy(call.args[0]))]
    return []


def _save_changed(call: ast.Call):
    """`x.save_pretrained(folder)`: merged first (the guide's mistake 4), or written into another folder."""
    if not (isinstance(call.func, ast.Attribute) and _called(call) == "save_pretrained" and call.args):
        return []
    if "tokenizer" in ast.unparse(call.func.value):  # a tokenizer has nothing to merge and no weights to lose
        return []
    merged = copy.deepcopy(call)
    merged.func.value = ast.Call(ast.Attribute(merged.func.value, "merge_and_unload"), [], [])
    elsewhere = copy.deepcopy(call)
    elsewhere.args[0] = ast.Constant("saved-elsewhere")
    return [("merge_and_unload() before save_pretrained", merged), ("saved into another folder", elsewhere)]


def _merged_names(tree: ast.Module) -> set[str]:
    """Names the cell binds to a merged model (`merged = ....merge_and_unload()`): saving one is already the
    deployment route, so "merge before the save" does not apply there (a second merge is no mistake, just a crash)."""
    return {
        ast.unparse(target)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and _calls(node, "merge_and_unload")
        for target in node.targets
    }


def _calls(statement: ast.stmt, name: str) -> bool:
    return any(isinstance(n, ast.Call) and _called(n) == name for n in ast.walk(statement))


def _prepare_moved(tree: ast.Module) -> Iterator[tuple[str, ast.Module]]:
    """prepare_model_for_kbit_training moved after get_peft_model (the two statements swapped)."""
    body = tree.body
    for i, first in enumerate(body):
        for j in range(i + 1, len(body)):
            if _calls(first, "prepare_model_for_kbit_training") and _calls(body[j], "get_peft_model"):
                new = copy.deepcopy(tree)
                new.body[i], new.body[j] = new.body[j], new.body[i]
                yield "prepare_model_for_kbit_training moved after get_peft_model", new


_SWAPS = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
}


def _operator_swapped(node):
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _SWAPS:
        new = copy.deepcopy(node)
        new.ops = [_SWAPS[type(node.ops[0])]()]
        return [(f"{ast.unparse(node)} -> {ast.unparse(new)}", new)]
    if isinstance(node, ast.BinOp) and type(node.op) in _SWAPS:
        new = copy.deepcopy(node)
        new.op = _SWAPS[type(node.op)]()
        return [(f"{ast.unparse(node)} -> {ast.unparse(new)}", new)]
    return []


def _truth_flipped(node):
    """True <-> False; a keyword's value is named with its keyword (`gradient_checkpointing=True -> False`), so
    two flips in one cell read, and triage, apart."""
    if isinstance(node, ast.keyword) and node.arg and isinstance(node.value, ast.Constant):
        value = node.value.value
        if type(value) is bool:
            return [(f"{node.arg}={value} -> {not value}", ast.keyword(node.arg, ast.Constant(not value)))]
    if isinstance(node, ast.Constant) and type(node.value) is bool:
        return [(f"{node.value} -> {not node.value}", ast.Constant(not node.value))]
    return []


# What a check that kills a PEFT-aware mutant must name (any of these words, in its message): the mistake its
# operator makes. A generic mutant is killed by any named rule.
INTENDED = {
    "r=": ("Mistake 2", "budget", "2x rank"),
    "lora_alpha=": ("Mistake 2", "budget", "2x rank"),
    "target": ("Mistake 1", "budget"),
    "task_type": ("Mistake 1", "Mistake 5", "task_type"),
    "modules_to_save": ("Mistake 5",),
    "prepare_model_for_kbit_training": ("Mistake 3",),
    "bnb_4bit": ("QLoRA pattern",),
    "load_in_4bit": ("QLoRA pattern",),
    "quantization_config": ("QLoRA pattern", "4-bit"),
    "merge_and_unload": ("Mistake 4",),
    "saved into another folder": ("Mistake 4", "adapter"),
    "is_trainable": ("trainable",),
    "adapter_name": ("adapter",),
    "learning_rate": ("train", "loss", "budget"),
    "steps": ("train", "loss", "budget"),
    "max_steps": ("train", "loss", "budget"),
    "use_rslora": ("rsLoRA", "alpha/sqrt"),
    "use_dora": ("DoRA",),
}


def intended(mutant: Mutant) -> tuple[str, ...]:
    """The words a check killing this mutant must say; () for a generic mutant (any named rule kills it)."""
    if mutant.kind != PEFT:
        return ()
    return next((words for start, words in INTENDED.items() if mutant.change.startswith(start)), ())


# name -> (kind, the node type it applies to, the operator)
OPERATORS: dict[str, tuple[str, type | tuple[type, ...], Callable]] = {
    "keyword": (PEFT, ast.keyword, _keyword),
    "prepare_removed": (PEFT, ast.Call, _prepare_removed),
    "save_changed": (PEFT, ast.Call, _save_changed),
    "operator_swapped": (GENERIC, ast.AST, _operator_swapped),
    "truth_flipped": (GENERIC, (ast.keyword, ast.Constant), _truth_flipped),
}


class _Replace(ast.NodeTransformer):
    def __init__(self, target: ast.AST, new: ast.AST | None):
        self.target, self.new = target, new

    def visit(self, node):
        if node is self.target:
            return self.new
        return super().visit(node)


def _statement_removed(tree: ast.Module) -> Iterator[tuple[str, ast.Module]]:
    """Each top-level statement replaced by `pass` (a cell of one statement keeps it: that is an empty answer)."""
    if len(tree.body) < 2:
        return
    for i, statement in enumerate(tree.body):
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            continue
        new = copy.deepcopy(tree)
        new.body[i] = ast.Pass()
        first = ast.unparse(statement).splitlines()[0]
        yield f"statement removed: {first[:70]}", new


def mutants_of(lab: str, cell: str, source: str) -> list[Mutant]:
    """Every mutant of one solution cell: each operator at every site where it applies."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:  # a cell with IPython syntax (%%time): no syntax tree to mutate
        raise CourseError(
            f"{lab}, cell {cell}: its solution is not plain Python ({err.msg}), so it cannot be mutated."
        ) from None
    found: list[tuple[str, str, str, ast.Module]] = []
    nodes, merged = list(ast.walk(tree)), _merged_names(tree)
    for name, (kind, node_type, operator) in OPERATORS.items():
        for index, node in enumerate(nodes):
            if not isinstance(node, node_type):
                continue
            for change, new in operator(node):
                if change.startswith("merge_and_unload") and ast.unparse(node.func.value) in merged:
                    continue
                twin = copy.deepcopy(tree)
                target = list(ast.walk(twin))[index]
                mutated = ast.fix_missing_locations(_Replace(target, new).visit(twin))
                found.append((name, kind, change, mutated))
    found += [("prepare_moved", PEFT, change, new) for change, new in _prepare_moved(tree)]
    found += [("statement_removed", GENERIC, change, new) for change, new in _statement_removed(tree)]
    mutants, seen = [], {ast.unparse(tree)}
    for name, kind, change, mutated in found:
        text = ast.unparse(mutated) + "\n"
        if text.strip() in seen:  # two operators that make the same program: one mutant
            continue
        seen.add(text.strip())
        mutants.append(Mutant(lab, cell, name, kind, change, text, source, index=len(mutants)))
    return mutants


def mutants(lab: str, kinds: tuple[str, ...] = (PEFT, GENERIC)) -> list[Mutant]:
    """Every mutant of a lab's code solution cells (clear error for a lab without any)."""
    import nbformat

    from peft_grader.catalogue import _solutions
    from peft_grader.nbcourse import SOURCE, labs

    if lab not in labs():
        raise CourseError(f"{lab!r} is not a course lab. Labs: {', '.join(labs())}.")
    master = nbformat.read(SOURCE / lab / f"{lab}.ipynb", as_version=4)
    code = {c.metadata.get("nbgrader", {}).get("grade_id") for c in master.cells if c.cell_type == "code"}
    cells = {gid: src for gid, src in _solutions(lab).items() if gid in code and src.strip()}
    if not cells:
        raise CourseError(f"{lab} has no code solution cells: there is nothing to mutate.")
    found = []
    for gid, source in cells.items():
        found += [m for m in mutants_of(lab, gid, source) if m.kind in kinds]
    return found


def verdict_of(result, words: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """From one graded submission: killed (a check lost points naming a rule, and one of `words` where given),
    killed elsewhere (named rules, none of them the operator's mistake), survived or broken; and what the
    checks that lost points said."""
    said = [c.message for c in result.checks if c.score < c.max_score]
    if result.reason:
        return "broken", [result.reason]
    if result.score >= result.max_score:
        return "survived", said
    named = [message for message in said if message.startswith("PeftMistake")]
    if not named:
        return "broken", said
    if not words or any(w.lower() in message.lower() for message in named for w in words):
        return "killed", said
    return "killed elsewhere", said


TRIAGE = Path(__file__).resolve().parents[1] / "mutation_triage.toml"


def triage(path: Path = TRIAGE) -> dict[tuple[str, str, str], str]:
    """Survivors judged equivalent answers: (lab, cell, change) -> the reason. In each of the three a `*` stands
    for any text (every other character is itself), for one reason that holds at many sites (a print removed,
    in any cell)."""
    from peft_grader.catalogue import tomllib

    if not path.exists():
        return {}
    data = tomllib.loads(path.read_text())
    return {(e["lab"], e["cell"], e["change"]): e["reason"] for e in data.get("equivalent", [])}


def equivalent_reason(m: Mutant, known: dict[tuple[str, str, str], str]) -> str:
    """The triage file's reason for this mutant ('' where none applies): the first entry it matches."""

    def matches(text: str, pattern: str) -> bool:
        return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), text, flags=re.DOTALL) is not None

    for (lab, cell, change), reason in known.items():
        if matches(m.lab, lab) and matches(m.cell, cell) and matches(m.change, change):
            return reason
    return ""


def run(
    labs: list[str],
    out_dir: Path,
    kinds=(PEFT, GENERIC),
    workers: int | None = None,
    quiet=False,
    changes: set[str] | None = None,
) -> list[Outcome]:
    """Write every mutant of `labs` (only those whose change is in `changes`, where given) as a class, grade it
    with the real pipeline, and sort the outcomes (a survivor the triage file calls equivalent: "equivalent")."""
    import nbformat

    from peft_grader import grading
    from peft_grader.catalogue import submission

    out_dir = Path(out_dir)
    made = {}
    for lab in labs:
        for m in mutants(lab, kinds):
            if changes is not None and m.change not in changes:
                continue
            target = out_dir / "submissions" / m.student / f"{lab}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(submission(lab, {m.cell: m.source}), target)
            made[(m.student, lab)] = m
    if not made:
        raise CourseError(f"no mutant of {', '.join(labs)} matches: nothing to grade.")
    results = grading.grade(out_dir / "submissions", out_dir / "graded", quiet=quiet, workers=workers)
    outcomes, equivalent = [], triage()
    for r in results:
        m = made.get((r.student, r.lab))
        if m is not None:
            verdict, said = verdict_of(r, intended(m))
            reason = equivalent_reason(m, equivalent)
            if verdict == "survived" and reason:
                verdict, said = "equivalent", [reason]
            outcomes.append(Outcome(m, verdict, r.score, r.max_score, said))
    (out_dir / "mutation.json").write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
    (out_dir / "mutation.md").write_text(report(outcomes))
    return outcomes


VERDICTS = ("killed", "killed elsewhere", "survived", "equivalent", "broken")


def report(outcomes: list[Outcome]) -> str:
    """Per lab and kind: the mutants by verdict and the mutation score (killed by the intended check, over all
    but the equivalent and the broken); then every mutant not killed as intended, with its cell's diff."""
    lines = [
        "| lab | kind | mutants | " + " | ".join(VERDICTS) + " | mutation score |",
        "|---|---|---:|" + "---:|" * len(VERDICTS) + "---:|",
    ]
    for lab in sorted({o.mutant.lab for o in outcomes}):
        for kind in (PEFT, GENERIC):
            mine = [o for o in outcomes if o.mutant.lab == lab and o.mutant.kind == kind]
            if not mine:
                continue
            count = {v: sum(o.verdict == v for o in mine) for v in VERDICTS}
            judged = count["killed"] + count["killed elsewhere"] + count["survived"]
            score = f"{count['killed'] / judged:.0%}" if judged else "n/a"
            counts = " | ".join(str(count[v]) for v in VERDICTS)
            lines.append(f"| {lab} | {kind} | {len(mine)} | {counts} | {score} |")
    for verdict, heading in (
        ("survived", "Survivors (full marks): a missed mistake, or an equivalent answer to triage"),
        ("killed elsewhere", "Killed by another check than the one for the operator's mistake"),
        ("equivalent", "Equivalent answers (grader/mutation_triage.toml)"),
        ("broken", "Broken (crashed before any check could judge it)"),
    ):
        chosen = [o for o in outcomes if o.verdict == verdict]
        if not chosen:
            continue
        lines += ["", f"## {heading}", ""]
        for o in chosen:
            m = o.mutant
            lines += [f"### {m.lab}, cell `{m.cell}`: {m.change} ({m.operator})", "", "```diff"]
            lines += [m.diff().rstrip(), "```"] + [f"- {text[:300]}" for text in o.said[:2]] + [""]
    return "\n".join(lines) + "\n"
