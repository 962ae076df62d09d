"""The trusted executor's small parts (peft_grader.sandbox_execute): what it does with a test cell's stderr, which
%%writefile bodies it knows, and how it names where the guard's evidence came from."""

from __future__ import annotations

import nbformat

from peft_grader import sandbox_execute as ex


def test_a_test_cells_stderr_is_not_a_failure_but_its_error_still_is():
    cell = nbformat.v4.new_code_cell("check()")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="loading weights file model.safetensors\n"),
        nbformat.v4.new_output("error", ename="PeftMistake", evalue="[Mistake 3] ...", traceback=[]),
    ]
    ex._stderr_to_stdout(cell)
    assert [o.get("name") for o in cell.outputs] == ["stdout", None]
    assert cell.outputs[1].output_type == "error"


def test_writefile_bodies_are_read_as_ipython_writes_them():
    assert ex._writefile_body("%%writefile helper.py\nX = 1") == "X = 1\n"
    assert ex._writefile_body("%%writefile helper.py\nX = 1\n") == "X = 1\n"
    assert ex._writefile_body("%%writefile -a helper.py\nX = 1") == ""  # appended: not the file's whole text
    assert ex._writefile_body("X = 1") == ""


def test_evidence_names_the_cell_and_line():
    executor = ex.SandboxExecute.__new__(ex.SandboxExecute)
    executor._labels = {7: "prepare"}
    assert executor._evidence({"execution_count": 7, "line": 3, "detail": "reads an interpreter frame"}) == (
        "cell prepare line 3: reads an interpreter frame"
    )
    assert executor._evidence({"this_cell": True, "detail": "sets a custom exception handler"}, "#12") == (
        "cell #12: sets a custom exception handler"
    )
    assert executor._evidence({"file": "payload.py", "line": 5, "detail": "installs an audit hook"}) == (
        "file payload.py line 5: installs an audit hook"
    )
