"""One lab, one place: each lab's hidden checks are a folder named after it, the judges and file checks load no
torch, the checks import each other without cycles, and the registry of what is decided outside the kernel
names real test cells, real functions and records that a kernel check publishes."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from peft_grader import nbcourse

CHECKS = nbcourse.GRADER / "checks"
CORE = {"__init__.py", "adapter_files.py", "evidence.py", "hardware.py", "inspect_model.py", "outside.py"}
LAB_PARTS = {"__init__.py", "kernel.py", "judges.py", "files.py"}
HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "trl", "accelerate", "datasets")
# What loads without the libraries: the core but the model inspection's live half, and every lab's registry,
# judges and file checks (outside the kernel they run in a fresh process, where torch costs seconds).
LIGHT = sorted(
    {
        p
        for p in CHECKS.rglob("*.py")
        if p.parent == CHECKS or p.name in ("__init__.py", "judges.py", "files.py")
    }
)


def _module(path: Path) -> str:
    parts = path.relative_to(CHECKS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _hidden_part(source: str) -> str:
    return source.split("### BEGIN HIDDEN TESTS", 1)[1].split("### END HIDDEN TESTS", 1)[0]


def _test_cells(lab: str) -> dict[str, str]:
    nb = nbformat.read(nbcourse.SOURCE / lab / f"{lab}.ipynb", as_version=4)
    return {
        c.metadata["nbgrader"]["grade_id"]: c.source
        for c in nb.cells
        if c.cell_type == "code"
        and c.metadata.get("nbgrader", {}).get("grade")
        and "BEGIN HIDDEN TESTS" in c.source
    }


def test_each_lab_is_one_folder_of_checks_beside_a_small_core():
    assert {p.name for p in CHECKS.glob("*.py")} == CORE
    folders = {p.name for p in CHECKS.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == {f"lab{lab}" for lab in nbcourse.labs()}
    for lab in nbcourse.labs():
        parts = {p.name for p in (CHECKS / f"lab{lab}").glob("*.py")}
        assert {"__init__.py", "kernel.py"} <= parts <= LAB_PARTS, (lab, parts)


@pytest.mark.parametrize("lab", nbcourse.labs())
def test_hidden_tests_call_their_own_labs_checks(lab):
    """Every hidden test cell imports its lab's kernel checks, under a name no learner's variable takes."""
    alias = f"lab{lab[:2]}_checks"
    cells = _test_cells(lab)
    assert cells, lab
    for grade_id, source in cells.items():
        hidden = _hidden_part(source)
        imports = [n for n in ast.walk(ast.parse(hidden)) if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert [(n.module, [(a.name, a.asname) for a in n.names]) for n in imports] == [
            (f"checks.lab{lab}", [("kernel", alias)])
        ], grade_id
        assert re.search(rf"\b{alias}\.\w+\(globals\(\)\)", hidden), grade_id


def _published_records() -> set[str]:
    """Names a kernel check publishes its record under: string constants given to publish() or model_record()."""
    names = set()
    for path in CHECKS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
                "publish",
                "model_record",
                "_model_record",
                "_record",
            ):
                names |= {
                    a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                }
    return names


@pytest.mark.parametrize("lab", nbcourse.labs())
def test_the_outside_registry_names_test_cells_functions_and_records(lab, hidden_check):
    runner = hidden_check("outside")
    outside = nbcourse.outside_targets(lab)
    assert outside == runner.outside_targets(lab)  # the grader reads what the runner runs
    assert set(outside) <= set(_test_cells(lab)), lab
    published = _published_records()
    for grade_id, target in outside.items():
        kind, name = target.split(".")
        assert kind in sys.modules["checks"].OUTSIDE_KINDS, target
        assert callable(getattr(hidden_check(f"lab{lab}.{kind}"), name)), target
        if kind == "judges":
            assert name in published, f"{lab} {grade_id}: no kernel check publishes a record named {name!r}"


def test_judges_and_file_checks_load_no_heavy_library():
    """Read at the top of a module: none of the libraries; loaded in a fresh process: none of them either."""
    for path in LIGHT:
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[0] in HEAVY], (
                f"{path.relative_to(CHECKS)} imports {names}"
            )
    code = (
        "import importlib, json, sys\n"
        f"for name in {[_module(p) for p in LIGHT]!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(CHECKS.parent), "PATH": ""},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def _imports(path: Path) -> set[str]:
    """The modules of grader/checks that `path` imports, at its top or inside its functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    modules = {_module(p) for p in CHECKS.rglob("*.py")}
    return {m for m in found if m in modules and m != "checks"} - {_module(path)}


def test_the_checks_import_each_other_without_cycles():
    graph = {_module(p): _imports(p) for p in CHECKS.rglob("*.py")}
    done, path = set(), []

    def visit(module):
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(module) :] + [module]))
        if module in done:
            return
        path.append(module)
        for other in sorted(graph.get(module, ())):
            visit(other)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_learners_package_imports_nothing_of_the_grader_when_loaded():
    """labutils' commands hand over to the grader inside a function, when it is installed; no module loads it."""
    for path in (nbcourse.REPO / "src" / "labutils").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[0] in ("peft_grader", "checks")], path
