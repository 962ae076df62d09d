"""Statements that reach into the grader are taken out of a submission before it runs.

A learner's cells share a process with the hidden checks, so a cell could replace the checks, the
exceptions they raise, the libraries they read or the namespace they are given. Before grading, each
cell a learner can edit is parsed, and every top-level statement that does one of those things is
replaced by a comment saying so. The rest runs as written, so the submission gets the score its honest
work deserves, and the summary says what was removed. Cells nbgrader restores from the master (locked
and test cells) are left alone: their edits are undone anyway.
"""

from __future__ import annotations

import ast
import builtins

# Reaching the grader, the import system, the interpreter's internals or IPython's hooks.
DENIED_MODULES = {"checks", "builtins", "importlib", "ctypes", "gc", "inspect", "types"}
DENIED_NAMES = {
    "get_ipython",
    "globals",
    "locals",
    "vars",
    "__builtins__",
    "__import__",
    "exec",
    "eval",
    "compile",
    "setattr",
    "delattr",
    "__loader__",
    "__spec__",
}
DENIED_ATTRIBUTES = {
    "modules",
    "meta_path",
    "path_hooks",
    "settrace",
    "setprofile",
    "__code__",
    "__globals__",
    "__dict__",
    "__class__",
    "__subclasses__",
    "f_globals",
    "f_locals",
}
BUILTIN_NAMES = set(dir(builtins))


def _python(source: str) -> str:
    """The cell as plain Python (IPython magics and `!` commands translated)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def _imported_roots(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {a.asname or a.name for a in node.names}
    return names


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _why(statement: ast.stmt, imported: set[str]) -> str:
    """Why this statement tampers with grading, or '' if it does not."""
    for node in ast.walk(statement):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in DENIED_MODULES:
                    return f"imports {alias.name}"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in DENIED_MODULES:
            return f"imports from {node.module}"
        elif isinstance(node, ast.Name) and node.id in DENIED_NAMES:
            return f"uses {node.id}"
        elif isinstance(node, ast.Attribute) and node.attr in DENIED_ATTRIBUTES:
            return f"touches .{node.attr}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "checks" in node.value:
            return "names the grader's checks"
        elif (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and node.name in BUILTIN_NAMES
        ):
            return f"redefines the builtin {node.name}"
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name) and sub.id in BUILTIN_NAMES:
                        return f"rebinds the builtin {sub.id}"
                if isinstance(target, (ast.Attribute, ast.Subscript)) and _root(target) in imported:
                    return f"patches {ast.unparse(target)} of an imported library"
    return ""


def sanitize_cell(source: str, imported: set[str]) -> tuple[str, list[str]]:
    """The cell with tampering statements commented out, and what was removed."""
    try:
        code = _python(source)
        tree = ast.parse(code)
    except SyntaxError:
        return source, []  # it fails when it runs, like any syntax error
    lines = code.splitlines()
    removed, findings = set(), []
    for statement in tree.body:
        if why := _why(statement, imported):
            findings.append(f"line {statement.lineno}: {why}")
            removed |= set(range(statement.lineno - 1, statement.end_lineno))
    if not findings:
        return source, []
    kept = [
        f"# removed by the grader (tampering): {line}" if i in removed else line
        for i, line in enumerate(lines)
    ]
    return "\n".join(kept) + "\n", findings


def sanitize(nb, restored_ids: set[str]) -> list[str]:
    """Sanitize, in place, every code cell a learner can edit; returns the findings as 'cell: why'."""
    editable = [
        (i, c)
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade_id") not in restored_ids
    ]
    imported = set()  # from every code cell: the lab's own imports (torch, peft, ...) are locked cells
    for cell in (c for c in nb.cells if c.cell_type == "code"):
        try:
            imported |= _imported_roots(ast.parse(_python(cell.source)))
        except SyntaxError:
            pass
    findings = []
    for index, cell in editable:
        cell.source, found = sanitize_cell(cell.source, imported)
        name = cell.metadata.get("nbgrader", {}).get("grade_id") or f"#{index + 1}"
        findings += [f"cell {name} {f}" for f in found]
    return findings
