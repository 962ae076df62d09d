"""The live check (`labutils.check`, peft_grader.live): one hidden test against live objects, its verdict worded
as the graded run words it, and one readable line wherever it cannot run."""

from __future__ import annotations

import sys

import pytest
import torch
from transformers import BitsAndBytesConfig

import labutils
from labutils.errors import CourseError
from peft_grader import live


def _config(quant_type: str) -> BitsAndBytesConfig:
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def _namespace(config) -> dict:
    return {"bnb_config": config, "BitsAndBytesConfig": BitsAndBytesConfig, "torch": torch}


def test_a_right_answer_passes_and_a_mistake_is_named_with_its_fix():
    right = live.verdict("test_bnb_config", _namespace(_config("nf4")), lab="04_qlora")
    assert right.passed and right.message == "" and right.points == 3
    wrong = live.verdict("test_bnb_config", _namespace(_config("fp4")), lab="04_qlora")
    assert not wrong.passed
    assert wrong.message.startswith("PeftMistake: [QLoRA pattern") and "Fix:" in wrong.message


def test_a_missing_variable_is_a_verdict_not_a_traceback():
    found = live.verdict("test_bnb_config", {}, lab="04_qlora")
    assert not found.passed and found.message.startswith("PeftMistake: `bnb_config` is not defined")


def test_the_lab_comes_from_the_notebook_or_the_one_lab_with_that_test():
    assert live.find_lab("test_bnb_config", "/home/me/course/notebooks/07_capstone.ipynb") == "07_capstone"
    assert live.find_lab("test_count_linear", None) == "01_lora_anatomy"
    with pytest.raises(CourseError, match="several labs"):
        live.find_lab("test_bnb_config", None)
    with pytest.raises(CourseError, match="no lab has a test"):
        live.find_lab("test_nothing", None)
    with pytest.raises(CourseError, match="has no test"):
        live.verdict("test_nothing", {}, lab="04_qlora")


def test_the_front_door_prints_one_line_wherever_it_cannot_check(monkeypatch, capsys):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    labutils.check("test_bnb_config", lab="04_qlora")
    assert capsys.readouterr().out.count("\n") == 1
    monkeypatch.delenv("NBGRADER_EXECUTION")
    monkeypatch.delenv("NBGRADER_SANDBOX", raising=False)

    monkeypatch.setattr(live, "CHECKS", live.CHECKS.parent / "absent")  # a class copy without the checks
    labutils.check("test_bnb_config", lab="04_qlora")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "not installed" in out
    monkeypatch.undo()

    import peft_grader

    monkeypatch.delattr(peft_grader, "live")  # no grader at all (Colab, a wheel): the import fails
    monkeypatch.setitem(sys.modules, "peft_grader.live", None)
    labutils.check("test_bnb_config", lab="04_qlora")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "not installed" in out


def test_the_front_door_prints_the_verdict_without_a_traceback(capsys):
    globals()["bnb_config"] = _config("fp4")
    try:
        labutils.check("test_bnb_config", lab="04_qlora")
    finally:
        del globals()["bnb_config"]
    out = capsys.readouterr().out
    assert out.startswith("✗ test_bnb_config (04_qlora): 0 of 3 points")
    assert "fp4" in out and "Fix:" in out and "Traceback" not in out and "PeftMistake" not in out
    labutils.check("test_nothing", lab="04_qlora")
    assert "has no test" in capsys.readouterr().out


def test_a_learners_own_checks_module_cannot_stand_in_for_the_courses(monkeypatch, tmp_path, capsys):
    import types

    theirs = types.ModuleType("checks")
    theirs.__file__ = str(tmp_path / "checks.py")  # e.g. a checks.py of the learner's beside the notebook
    monkeypatch.setitem(sys.modules, "checks", theirs)
    with pytest.raises(CourseError, match="another module named checks"):
        live.verdict("test_bnb_config", _namespace(_config("nf4")), lab="04_qlora")
    labutils.check("test_bnb_config", lab="04_qlora")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "rename it" in out and "Traceback" not in out


def test_a_failure_of_the_checks_own_machinery_is_one_line(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(live, "verdict", broken)
    labutils.check("test_bnb_config", lab="04_qlora")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "could not run here (OSError: disk gone)" in out
