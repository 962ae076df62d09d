"""Feedback shows each failing check's name, points and message, never the checks (peft_grader.feedback)."""

from __future__ import annotations

import nbformat

from peft_grader.feedback import EVIDENCE_MIME, VerdictsOnly, scrub_paths

TEST_CELL = """### BEGIN HIDDEN TESTS
from checks.lab04_qlora import kernel as lab04_checks

lab04_checks.kbit_prepared(globals())
### END HIDDEN TESTS
assert model is not None, "define model"
"""
TRACEBACK = [
    "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
    "Traceback (most recent call last)",
    'File /work/main/grader/checks/lab04_qlora/kernel.py:88, in kbit_prepared(ns)\n---> 88     fail(3, "...")',
    "PeftMistake: [Mistake 3] ... Fix: prepare_model_for_kbit_training(model)",
]


def _feedback(cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    for index, cell in enumerate(nb.cells):
        VerdictsOnly().preprocess_cell(cell, {}, index)
    return nb


def test_a_failing_check_shows_its_message_only():
    cell = nbformat.v4.new_code_cell(
        TEST_CELL, metadata={"nbgrader": {"grade": True, "solution": False, "grade_id": "test_kbit_prepared"}}
    )
    cell.outputs = [
        nbformat.v4.new_output(
            "error",
            ename="PeftMistake",
            evalue="[Mistake 3] /tmp/grading/autograded/ann/04_qlora/qlora-output is not prepared. Fix: call it.",
            traceback=TRACEBACK,
        )
    ]
    [shown] = _feedback([cell]).cells
    assert "BEGIN HIDDEN TESTS" not in shown.source and "lab04_checks.kbit_prepared" not in shown.source
    assert 'assert model is not None, "define model"' in shown.source  # the visible part stays
    assert shown.outputs[0].traceback == [
        "PeftMistake: [Mistake 3] …/qlora-output is not prepared. Fix: call it."
    ]


def test_a_long_message_is_wrapped_whole():
    cell = nbformat.v4.new_code_cell(TEST_CELL, metadata={"nbgrader": {"grade": True, "grade_id": "t"}})
    evalue = (
        "[Mistake 4] full model weights were saved beside the adapter " * 4 + "Fix: save the adapter only."
    )
    cell.outputs = [nbformat.v4.new_output("error", ename="PeftMistake", evalue=evalue, traceback=TRACEBACK)]
    [shown] = _feedback([cell]).cells
    [text] = shown.outputs[0].traceback
    assert all(len(line) <= 100 for line in text.splitlines()) and len(text.splitlines()) > 1
    assert " ".join(text.split()) == " ".join(f"PeftMistake: {evalue}".split())


def test_learner_cells_keep_their_code_and_lose_machine_paths():
    cell = nbformat.v4.new_code_cell("print(ADAPTER_DIR.resolve())")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="/tmp/pytest-7/course/x/adapter\n")]
    [shown] = _feedback([cell]).cells
    assert shown.source == "print(ADAPTER_DIR.resolve())"
    assert shown.outputs[0].text == "…/adapter\n"


def test_relative_paths_and_urls_are_kept():
    assert scrub_paths("saved in qlora-output/adapter") == "saved in qlora-output/adapter"
    assert scrub_paths("see https://huggingface.co/docs/peft") == "see https://huggingface.co/docs/peft"


def test_the_graders_records_stay_out_of_the_feedback(hidden_check):
    evidence = hidden_check("evidence")
    assert evidence.MIME == EVIDENCE_MIME
    cell = nbformat.v4.new_code_cell(TEST_CELL, metadata={"nbgrader": {"grade": True, "grade_id": "t"}})
    record = {evidence.MIME: {"check": "kbit_prepared", "record": {}}, "text/plain": "[evidence]"}
    cell.outputs = [
        nbformat.v4.new_output("display_data", data=record),
        nbformat.v4.new_output("stream", name="stdout", text="the learner's own print\n"),
    ]
    [shown] = _feedback([cell]).cells
    assert [o.output_type for o in shown.outputs] == ["stream"]


def test_the_tutor_note_opens_with_the_score_and_one_linked_line_per_lost_point():
    from peft_grader.feedback import TutorNote

    def graded(source, grade_id, points, score, outputs=()):
        meta = {"grade": True, "solution": False, "grade_id": grade_id, "points": points, "score": score}
        return nbformat.v4.new_code_cell(source, metadata={"nbgrader": meta}, outputs=list(outputs))

    error = nbformat.v4.new_output(
        "error",
        ename="PeftMistake",
        evalue="[Mistake 3: Not using prepare_model_for_kbit_training() with quantization] the embeddings are "
        "bf16 in /tmp/x/y/model. Fix: model = prepare_model_for_kbit_training(model)",
        traceback=[],
    )
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("## Exercise 1: the config"),
        graded("assert bnb_config", "test_bnb_config", 2, 2),
        nbformat.v4.new_markdown_cell("## Exercise 2: prepare the model"),
        nbformat.v4.new_code_cell("model = 1"),
        graded("assert model", "test_kbit_prepared", 3, 0, [error]),
    ]
    nb, _ = TutorNote().preprocess(nb, {"nbgrader": {"score": 2, "max_score": 5}})
    note = nb.cells[0].source
    assert "Your score: 2 of 5 points" in note
    assert note.count("<li>") == 1 and "test_kbit_prepared" in note and "test_bnb_config" not in note
    assert '<a href="#learn-test_kbit_prepared">Mistake 3: Not using' in note
    assert "<b>Fix:</b> model = prepare_model_for_kbit_training(model)" in note and "/tmp/x" not in note
    assert nb.cells[3].source.startswith(
        '<a id="learn-test_kbit_prepared"></a>'
    )  # the section that teaches it

    nb.cells = [
        nbformat.v4.new_markdown_cell("## Exercise 1"),
        graded("assert bnb_config", "test_bnb_config", 2, 2),
    ]
    nb, _ = TutorNote().preprocess(nb, {"nbgrader": {"score": 2, "max_score": 2}})
    assert "Every autograded check passed" in nb.cells[0].source
