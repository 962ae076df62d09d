"""Checks decided from plain-data records (grader/checks/evidence.py), outside the kernel (grader/checks/outside.py).

A test cell publishes its record as a display_data output; the grader judges the one record in that cell
again, in a fresh process, with the same judge. These tests write the autograded notebook by hand.
"""

from __future__ import annotations

import enum
from pathlib import PurePosixPath

import nbformat
import pytest

WRAPPED = {
    "peft": True,
    "active_adapter": "default",
    "base_prefix": "base_model.model.",
    "base_children": ["bert", "classifier"],
    "modules": {"base_model.model.classifier": "modules_to_save"},
    "parameters": {
        "base_model.model.classifier.modules_to_save.default.weight": ["float32", True, 64, False]
    },
    "peft_config": {"default": {"task_type": "SEQ_CLS"}},
}
FROZEN_HEAD = {**WRAPPED, "modules": {"base_model.model.classifier": ""}}


@pytest.fixture
def evidence(hidden_check):
    return hidden_check("evidence")


def _notebook(folder, outputs_by_cell: dict[str, list]) -> None:
    nb = nbformat.v4.new_notebook()
    for grade_id, outputs in outputs_by_cell.items():
        cell = nbformat.v4.new_code_cell("", metadata={"nbgrader": {"grade": True, "grade_id": grade_id}})
        cell.outputs = outputs
        nb.cells.append(cell)
    nbformat.write(nb, folder / "06_task_heads.ipynb")


def _record(evidence, check: str, record: dict):
    return nbformat.v4.new_output("display_data", data={evidence.MIME: {"check": check, "record": record}})


def _outside(outside, folder) -> dict[str, str]:
    return outside("06_task_heads", folder)[0]


def test_records_are_plain_json(evidence):
    import numpy as np
    import torch

    class Kind(str, enum.Enum):
        SEQ_CLS = "SEQ_CLS"

    data = {
        "task": Kind.SEQ_CLS,
        "targets": {"value", "query"},
        "dtype": torch.bfloat16,
        "dir": PurePosixPath("a/b"),
    }
    assert evidence.plain(data) == {
        "task": "SEQ_CLS",
        "targets": ["query", "value"],
        "dtype": "bfloat16",
        "dir": "a/b",
    }
    assert evidence.plain({"r": np.int64(16), "share": np.float32(0.5)}) == {"r": 16, "share": 0.5}
    assert evidence.publish("t", {"shape": (2, 3)}) == {"shape": [2, 3]}  # what the judge reads is JSON's


def test_outside_the_kernel_the_record_decides(evidence, tmp_path, outside):
    _notebook(
        tmp_path,
        {
            "test_head_wrapped": [_record(evidence, "head_wrapped", FROZEN_HEAD)],
            # a pass recorded in another cell (or for another check) does not count for this one
            "test_lora_config": [_record(evidence, "head_wrapped", WRAPPED)],
        },
    )
    found = _outside(outside, tmp_path)
    assert "Mistake 5" in found["test_head_wrapped"] and "modules_to_save" in found["test_head_wrapped"]
    assert (
        found["test_lora_config"].startswith("could not be verified")
        and "0 records" in found["test_lora_config"]
    )


def test_a_correct_record_passes_and_a_second_record_fails_closed(evidence, tmp_path, outside):
    _notebook(tmp_path, {"test_head_wrapped": [_record(evidence, "head_wrapped", WRAPPED)]})
    assert _outside(outside, tmp_path)["test_head_wrapped"] == ""
    forged = [_record(evidence, "head_wrapped", WRAPPED), _record(evidence, "head_wrapped", WRAPPED)]
    _notebook(tmp_path, {"test_head_wrapped": forged})
    verdict = _outside(outside, tmp_path)["test_head_wrapped"]
    assert verdict.startswith("could not be verified") and "2 records" in verdict and "Fix:" in verdict


def test_in_the_kernel_and_outside_the_same_judge_decides(evidence, hidden_check):
    """The in-kernel half judges exactly what it published: the JSON form of the record."""
    judges = hidden_check("lab06_task_heads.judges")
    from checks import PeftMistake

    judges.head_wrapped(evidence.publish("head_wrapped", WRAPPED))
    with pytest.raises(PeftMistake, match="Mistake 5"):
        judges.head_wrapped(evidence.publish("head_wrapped", FROZEN_HEAD))


def _cells(evidence, recorded: dict | None) -> dict:
    """A test cell that published a passing record, and the training cell with what the grader recorded."""
    loop = {"metadata": {} if recorded is None else {"peft_course_recorded": recorded}}
    test = {"outputs": [_record(evidence, "head_wrapped", WRAPPED)]}
    return {"test_head_wrapped": test, "train_loop": loop}


def test_a_test_is_also_judged_on_the_model_the_training_cell_trained(evidence, hidden_check):
    """A decoy that passes its test cell fails on what the locked training cell recorded it trained."""
    runner = hidden_check("outside")
    from checks import PeftMistake

    def judge(cells):
        runner._judge_record("06_task_heads", "judges.head_wrapped", cells, "test_head_wrapped")

    judge(_cells(evidence, {"model": WRAPPED}))  # the same model trained: it passes
    with pytest.raises(
        PeftMistake, match=r"Mistake 5.*\(judged on what the notebook's cell train_loop did the work with\)"
    ):
        judge(_cells(evidence, {"model": FROZEN_HEAD}))
    with pytest.raises(LookupError, match="recorded no model .NameError"):
        judge(_cells(evidence, {"model": {"unrecorded": "NameError: name 'model' is not defined"}}))
    judge(_cells(evidence, {"model": {"restarted": True}}))  # the kernel died first: the reason says so
    judge(_cells(evidence, None))  # never ran (the wall budget stopped the notebook first)


# ---- recorders of what a locked cell trained with (the kernel guard calls them while it grades) ------------------
def test_adapter_state_and_training_rows(evidence):
    import datasets
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(4, 4)), LoraConfig(r=2, target_modules=["0"]))
    state = evidence.RECORDERS["adapter_state"](model)
    A, B = (
        "base_model.model.0.lora_A.weight",
        "base_model.model.0.lora_B.weight",
    )  # as save_pretrained names them
    assert state["untrained"] is True and set(state["tensors"]) == {A, B}
    with torch.no_grad():
        model.base_model.model[0].lora_B["default"].weight.add_(1)
    trained = evidence.RECORDERS["adapter_state"](model)
    assert trained["untrained"] is False and trained["tensors"][B] != state["tensors"][B]
    assert trained["tensors"][A] == state["tensors"][A]
    with pytest.raises(TypeError, match="not one of peft.s own PeftModel classes"):
        evidence.RECORDERS["adapter_state"](torch.nn.Linear(2, 2))
    rows = datasets.Dataset.from_dict({"input_ids": [[1, 5, 2], [1, 7]], "text": ["a", "b"]})
    assert evidence.RECORDERS["token_rows"](rows) == [[1, 5, 2], [1, 7]]
    with pytest.raises(TypeError, match="not a datasets.Dataset"):
        evidence.RECORDERS["token_rows"]({"input_ids": [[1]]})
