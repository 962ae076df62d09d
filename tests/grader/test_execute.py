"""What `make demo` shows of each lab that trains: its measure before and after, read from names the lab binds."""

from __future__ import annotations

import ast

import nbformat

from peft_grader import execute, nbcourse


def _bound(code: str) -> set[str]:
    """Every name an assignment in `code` binds (tuple targets and nested blocks included)."""
    tree = ast.parse(code)
    targets = [t for node in ast.walk(tree) if isinstance(node, ast.Assign) for t in node.targets]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def test_each_measure_names_what_its_lab_binds():
    for lab, (_, before, after, _) in execute.METRICS.items():
        master = nbformat.read(nbcourse.SOURCE / lab / f"{lab}.ipynb", as_version=4)
        code = "\n".join(
            cell.source
            for cell in master.cells
            if cell.cell_type == "code" and not cell.source.startswith("%")
        )
        for expression in (before, after):
            names = {n.id for n in ast.walk(ast.parse(expression)) if isinstance(n, ast.Name)}
            assert names <= _bound(code), (
                f"{lab} binds no {names - _bound(code)} for make demo's {expression}"
            )


def test_the_table_shows_before_and_after_and_a_dash_where_there_is_none():
    runs = [
        execute.LabRun("06_task_heads", 20.0, 800.0, before_after="accuracy 50% -> 95%"),
        execute.LabRun("07_capstone", 38.0, 900.0, before_after="exact match 0.0% -> 91.6%"),
        execute.LabRun("08_adapter_life", 12.0, 700.0),
    ]
    lines = execute.table(runs).splitlines()
    assert "before -> after training" in lines[0]
    assert "accuracy 50% -> 95%" in lines[1] and "exact match 0.0% -> 91.6%" in lines[2]
    assert lines[3].split()[3:] == ["-", "ok"]
