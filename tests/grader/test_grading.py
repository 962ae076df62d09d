"""The grade and check commands: readable errors, broken submissions reported, zips accepted."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from labutils import cli
from peft_grader import catalogue, grading, nbcourse, report, scores, verify


def _bad_input(tmp_path, case):
    """The command line of one bad input, after writing what it needs under tmp_path."""
    out = ["--out", str(tmp_path / "out")]
    if case == "missing folder":
        return ["grade", str(tmp_path / "nope"), *out]
    if case == "no lab in the folder":
        (tmp_path / "subs" / "ann").mkdir(parents=True)
        (tmp_path / "subs" / "ann" / "homework.ipynb").write_text("{}")
        return ["grade", str(tmp_path / "subs"), *out]
    if case == "neither folder nor zip":
        (tmp_path / "class.txt").write_text("ann, bob")
        return ["grade", str(tmp_path / "class.txt"), *out]
    if case == "zip escaping its folder":
        with zipfile.ZipFile(tmp_path / "class.zip", "w") as zf:
            zf.writestr("../../evil/04_qlora.ipynb", "{}")
        return ["grade", str(tmp_path / "class.zip"), *out]
    if case == "check of a missing notebook":
        return ["check", str(tmp_path / "04_qlora.ipynb")]
    if case == "check of a broken notebook":
        (tmp_path / "04_qlora.ipynb").write_text("{ not json")
        return ["check", str(tmp_path / "04_qlora.ipynb")]
    if case == "check of a notebook from no lab":
        nbformat.write(
            nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), tmp_path / "mine.ipynb"
        )
        return ["check", str(tmp_path / "mine.ipynb")]
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "missing folder",
        "no lab in the folder",
        "neither folder nor zip",
        "zip escaping its folder",
        "check of a missing notebook",
        "check of a broken notebook",
        "check of a notebook from no lab",
    ],
)
def test_bad_input_is_one_readable_message_that_names_the_fix(tmp_path, capsys, case):
    assert cli.main(_bad_input(tmp_path, case)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "Fix:" in err, f"the message must say what to do: {err}"
    assert len(err.splitlines()) <= 5 and max(map(len, err.splitlines())) <= 400, "must fit one screen"
    assert not (tmp_path.parent / "evil").exists()


def _broken_class(folder):
    """Two students whose submissions cannot run: the batch must report both and finish."""
    (folder / "not_json").mkdir(parents=True)
    (folder / "not_json" / "04_qlora.ipynb").write_text("{ this is not json")
    (folder / "empty").mkdir()
    nbformat.write(nbformat.v4.new_notebook(), folder / "empty" / "04_qlora.ipynb")
    (folder / "absent").mkdir()  # submitted nothing for the lab
    (folder / "absent" / "notes.txt").write_text("sorry")
    nbformat.write(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), folder / "absent" / "other.ipynb"
    )


@pytest.mark.slow
def test_broken_and_missing_submissions_get_a_reason_from_a_zip(tmp_path):
    _broken_class(tmp_path / "class")
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in (tmp_path / "class").rglob("*"):
            zf.write(path, path.relative_to(tmp_path))
    results = {r.student: r for r in grading.grade(archive, tmp_path / "course", quiet=True)}
    assert set(results) == {"not_json", "empty", "absent"}
    assert "not a readable notebook" in results["not_json"].reason
    assert results["empty"].reason == "the notebook is empty"
    assert results["absent"].reason == "missing submission"
    assert all(r.score == 0 and r.max_score == 20 for r in results.values())
    table = report.summary_table(list(results.values()))
    assert "missing submission" in table and "not a readable notebook" in table


@pytest.mark.slow
def test_self_check_names_the_mistake_and_fails(tmp_path, capsys):
    [entry] = [e for e in catalogue.entries("04_qlora") if e.name == "no_kbit_prep"]
    path = tmp_path / "04_qlora.ipynb"
    nbformat.write(catalogue.submission("04_qlora", entry.cells), path)
    assert cli.main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  test_kbit_prepared" in out and "Mistake 3" in out and "Fix:" in out
    assert "PASS  test_bnb_config" in out
    assert f"score: {entry.score:g}/20" in out


def test_outside_verification_reads_the_saved_adapter_without_torch(tmp_path, outside):
    """The fresh-process re-check of lab 04's files: a trained adapter passes, a zeroed one and a
    merged save fail with the guide's messages, and the checker never imports torch. (With no notebook
    beside the files, the checks judged from its records fail closed.)"""

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from labutils.models import ensure_tiny_model

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(ensure_tiny_model("causal_lm")),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]),
    )
    adapter = tmp_path / "qlora-output" / "adapter"

    def verdicts() -> dict:
        found, imported_torch = outside("04_qlora", tmp_path)
        assert not imported_torch
        from_records = {
            k: v for k, v in found.items() if k not in ("test_adapter_only", "test_adapter_trained")
        }
        assert from_records and all(v.startswith("could not be verified") for v in from_records.values())
        return {k: v for k, v in found.items() if k not in from_records}

    model.save_pretrained(adapter)  # lora_B is still zero: never trained
    untrained = verdicts()
    assert untrained["test_adapter_only"] == "" and "never trained" in untrained["test_adapter_trained"]

    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.01)
    model.save_pretrained(adapter)
    assert verdicts() == {"test_adapter_only": "", "test_adapter_trained": ""}

    model.merge_and_unload().save_pretrained(adapter)
    merged = verdicts()
    assert "Mistake 4" in merged["test_adapter_only"] and "Fix:" in merged["test_adapter_only"]


def test_summary_table_keeps_every_message_whole_with_its_fix():
    long = "[QLoRA pattern: 4-bit NF4 with double quantization and the right compute dtype] " * 2
    results = [
        scores.LabResult(
            "04_qlora--fp4",
            "04_qlora",
            14,
            16,
            checks=[
                scores.CheckResult("test_bnb_config", 0, 1, long + "Fix: bnb_4bit_quant_type='nf4'."),
                scores.CheckResult("test_loaded_4bit", 0, 1, "stored as fp4. Fix: reload with nf4."),
                scores.CheckResult("test_adapter_only", 2, 2),
            ],
        ),
        scores.LabResult("absent", "04_qlora", 0, 16, reason="missing submission"),
    ]
    table = report.summary_table(results, width=100)
    assert max(len(line) for line in table.splitlines()) <= 100
    flat = " ".join(table.split())
    assert "Fix: bnb_4bit_quant_type='nf4'." in flat and "Fix: reload with nf4." in flat
    assert "test_adapter_only" not in table.split("\n\n")[0], "a full-marks check is not a lost point"
    assert "missing submission" in table and "14/16" in table


@pytest.mark.parametrize("failure", ["crash", "timeout", "garbage"])
def test_outside_verification_fails_closed(monkeypatch, tmp_path, failure):
    """A verification outside the kernel that crashes, hangs or answers nonsense gives every one of the
    lab's outside checks a failure saying it could not be verified: never a pass, never a stopped class."""

    def run(*args, **kwargs):
        if failure == "timeout":
            raise subprocess.TimeoutExpired(args[0], kwargs.get("timeout"))
        out = "not json" if failure == "garbage" else ""
        return subprocess.CompletedProcess(args[0], 1 if failure == "crash" else 0, out, "Traceback: boom")

    monkeypatch.setattr(verify.subprocess, "run", run)
    found = verify.outside_verdicts("05_save_load_merge", tmp_path)
    assert set(found) == {"test_adapter_only", "test_deploy_copy", "test_merged_outputs"}
    assert all("could not be verified" in message and "Fix:" in message for message in found.values())


def test_summary_shows_what_was_flagged_for_review_without_costing_points():
    result = scores.LabResult(
        "ann",
        "04_qlora",
        score=20,
        max_score=20,
        review="flagged for review (ran as written): cell #3 line 1: %run",
    )
    table = report.summary_table([result])
    assert "20/20" in table and "review: flagged for review (ran as written): cell #3 line 1: %run" in table


def test_the_outside_checks_read_each_labs_folders_from_its_master(hidden_check):
    from pathlib import Path

    outside = hidden_check("outside")  # it passes checks.lab_paths(lab) to each on-disk check
    labs = [
        lab
        for lab in nbcourse.labs()
        if any(t.startswith("files.") for t in outside.outside_targets(lab).values())
    ]
    assert labs == ["04_qlora", "05_save_load_merge", "06_task_heads", "07_capstone", "09_chat_sft"]
    for lab in labs:
        paths = outside.lab_paths(lab)
        assert paths["ADAPTER_DIR"].parent == paths["OUTPUT_DIR"], lab  # ADAPTER_DIR = OUTPUT_DIR / "adapter"
    assert outside.lab_paths("05_save_load_merge")["DEPLOY_DIR"] == Path("lab05-output/deploy")


def test_outside_verification_without_its_zygote_runs_in_a_fresh_process(monkeypatch, tmp_path):
    """A zygote that has gone (or fails to run the checks) costs nothing: the checks run as without one."""
    ran = []

    def run(*args, **kwargs):
        ran.append(args[0])
        return subprocess.CompletedProcess(args[0], 0, '{"test_adapter_only": ""}', "")

    monkeypatch.setattr(verify.subprocess, "run", run)
    found = verify.outside_verdicts("05_save_load_merge", tmp_path, zygote="peft-warm-gone")
    assert ran and ran[0][-3:] == ["checks.outside", "05_save_load_merge", str(tmp_path)]
    assert found["test_adapter_only"] == ""


@pytest.mark.parametrize("held", [[], ["cell train line 3: runs code built from a string"]])
def test_merge_leaves_an_autograded_submission_waiting_for_a_hand_only_when_held(tmp_path, monkeypatch, held):
    """nbgrader creates each grade as needing manual grading: the merge decides it, so an honest submission
    is not listed as waiting in formgrader or grades.csv, and a held one is; a markdown answer still waits."""
    # nbgrader shells out to alembic when it creates a gradebook: the interpreter's bin must be on PATH
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    course = tmp_path / "course"
    course.mkdir()
    with nbcourse.gradebook(course) as gb:
        gb.add_assignment("lab")
        gb.add_notebook("lab", "lab")
        gb.add_grade_cell("test_a", "lab", "lab", max_score=2, cell_type="code")
        gb.add_grade_cell("test_b", "lab", "lab", max_score=3, cell_type="code")
    checks = [scores.CheckResult("test_a", 2, 2), scores.CheckResult("test_b", 0, 3, "Mistake: ... Fix: ...")]
    scores.merge(course, scores.LabResult("ann", "lab", 2, 5, checks=checks, held=held), tmp_path / "scratch")
    with nbcourse.gradebook(course) as gb:
        submission = gb.find_submission("lab", "ann")
        assert submission.needs_manual_grade is bool(held)
        assert [gb.find_grade(n, "lab", "lab", "ann").auto_score for n in ("test_a", "test_b")] == [2, 0]
        gb.add_grade_cell("essay", "lab", "lab", max_score=1, cell_type="markdown")
    scores.merge(course, scores.LabResult("bob", "lab", 2, 5, checks=checks), tmp_path / "scratch")
    with nbcourse.gradebook(course) as gb:
        assert gb.find_submission("lab", "bob").needs_manual_grade, "a markdown answer waits for its grader"
