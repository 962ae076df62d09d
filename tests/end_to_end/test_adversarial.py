"""The adversarial catalogue: hostile and broken submissions get the score their honest work deserves.

The fast tests prove the catalogue itself (every entry builds, each mutation does what it says, the
issue's whole list of threats is covered). The slow tests grade the whole adversarial class through
the real pipeline and assert every score and reason, and that nothing escaped the sandbox.

The slow tests need the isolated grading of issue 6 (sandboxed kernels, per-cell timeout, wall
budget, memory limit, no network, confined writes). Until it lands they fail, and they must not be
run unsandboxed on a shared machine: the memory entries really exhaust memory and the filesystem
entries write (probe files) into the repository and overwrite the test's own gradebook.
"""

from __future__ import annotations

import dataclasses
import json

import nbformat
import pytest

from labutils.errors import CourseError
from peft_grader import adversarial, catalogue, nbcourse, scores

LAB = "04_qlora"
TEST_CELLS = [
    "test_bnb_config",
    "test_loaded_4bit",
    "test_kbit_prepared",
    "test_lora_config",
    "test_trainable_share",
    "test_adapter_only",
    "test_adapter_trained",
]
# The issue's list, item by item: the entries that cover it.
REQUIRED = {
    "a cell that raises": ["raises_scratch_cell"],
    "an infinite loop": ["infinite_loop"],
    "a loop that ignores interrupts": ["loop_catches_interrupt"],
    "sys.exit()": ["sys_exit"],
    "os._exit()": ["os_exit"],
    "a kernel crash (segfault)": ["segfault"],
    "a memory bomb": ["memory_list"],
    "huge output": ["huge_output"],
    "deleted test cells": ["delete_test_cell"],
    "reordered test cells": ["move_test_after_late_fix"],
    "duplicated test cells": ["duplicate_tests"],
    "retyped (code <-> markdown) cells": ["retype_test_to_markdown"],
    "edited locked cells": ["edit_test_cell", "edit_locked_cell"],
    "changed points metadata": ["points_inflated"],
    "not valid JSON": ["not_json"],
    "empty": ["empty_notebook"],
    "nbformat 3": ["nbformat3"],
    "a notebook of another lab": ["foreign_lab"],
    "a missing submission": ["missing"],
    "monkeypatched check functions": ["patch_check_function"],
    "a redefined AssertionError": ["patch_assertion_error"],
    "a monkeypatched torch": ["patch_torch"],
    "monkeypatched peft counters": ["patch_peft_counter"],
    "a duck-typed fake model": ["fake_model"],
    "writing files outside its folder": ["write_repo", "write_gradebook"],
    "writing into the gradebook": ["write_gradebook"],
    "writing into the release or source": ["write_repo"],
    "reading the hidden checks": ["read_checks"],
    "network access": ["network"],
    "a very slow but correct submission": ["slow_but_correct"],
    # issue 18: what a warm kernel's submission leaves for the next one (tests/end_to_end/test_warm_kernels.py)
    "a background process left running": ["residue_process"],
    "a thread left running": ["residue_thread"],
    "a modified imported module": ["residue_thread"],
    "writes into a sibling folder": ["residue_files", "residue_process"],
    # issue 29: a mistake hidden by a technique the static review cannot see (each prevented or held)
    "a callback that puts itself back after the guard's pass, not a plain function": [
        "callback_reapplies_patch"
    ],
    "a custom exception handler swallowing in-kernel failures": ["swallow_failures"],
    "a trace installed through the standard library (bdb)": ["debugger_patches_judge"],
    "an audit hook, which nothing can remove": ["audit_hook_repatches"],
    "a module written from a string and imported": ["callback_reapplies_patch", "audit_hook_repatches"],
    "reading a check's expected values out of its frame": ["formula_from_the_checks_frame"],
    "rebinding the name a check reads to another object": ["rebind_model_to_a_decoy"],
    "editing the learner's own recorded measurements": ["edit_measured_losses"],
    "rewriting a saved file after its check ran": ["rewrite_adapter_after_check"],
    "honest styles: library logging, magics, a helper module, breakpoint()": ["honest_styles"],
    # issue 30: the capstone's saved adapter judged as the one its Trainer trained
    "an adapter trained before the lab's Trainer started": [
        "adapter_trained_before_the_trainer",
        "trains_in_a_cell_added_before_training",
    ],
    "a saved adapter rewritten before any check read it": ["saved_adapter_is_not_the_trained_one"],
    "the learner's code run inside the Trainer's training": ["collator_of_my_own"],
}
REQUIRED_THREATS = adversarial.THREATS - {"control"}  # every category the catalogue knows is used


@pytest.fixture(scope="module")
def entries() -> dict[str, adversarial.AdversarialEntry]:
    return {e.name: e for e in adversarial.entries(LAB)}


def _cells(entry) -> list:
    return nbformat.reads(adversarial.build(entry).decode(), as_version=4).cells


def _ids(cells) -> list[str | None]:
    return [c.metadata.get("nbgrader", {}).get("grade_id") for c in cells]


def _by_id(entry) -> dict:
    """grade_id -> cell of the entry's notebook (learner cells, which have none, left out)."""
    return {gid: c for gid, c in zip(_ids(_cells(entry)), _cells(entry), strict=True) if gid}


def _reference_cells() -> list:
    return catalogue.submission(LAB).cells


# ---------------------------------------------------------------- the catalogue itself
def test_catalogue_has_at_least_30_entries_with_fair_scores(entries):
    assert len(entries) >= 30
    full = sum(adversarial.max_points(LAB).values())
    assert full == 20
    for entry in entries.values():
        assert 0 <= entry.score <= full, entry.name
        assert entry.threat in adversarial.THREATS, entry.name
        assert set(entry.failed) <= set(TEST_CELLS), entry.name
        if entry.threat == "file":  # nothing could be graded: nothing to earn, and a reason says why
            assert entry.score == 0 and entry.reason, entry.name
        lost = sum(adversarial.max_points(LAB)[gid] for gid in entry.failed)
        if entry.failed:
            assert entry.score == full - lost, f"{entry.name}: score and failed checks disagree"


def test_every_threat_of_the_issue_is_covered():
    every = [e for lab in nbcourse.labs() for e in adversarial.entries(lab)]
    assert REQUIRED_THREATS <= {e.threat for e in every}
    names = {e.name for e in every}
    missing = {item: [n for n in required if n not in names] for item, required in REQUIRED.items()}
    assert {item: names for item, names in missing.items() if names} == {}


def test_tampering_entries_start_from_a_wrong_answer(entries):
    """A tampering entry proves something only if the tampering would have raised its score."""
    for entry in entries.values():
        if entry.threat in ("tamper", "fake"):
            assert entry.score < 20 and entry.failed, entry.name


def test_every_entry_builds(entries):
    for entry in entries.values():
        data = adversarial.build(entry)
        if entry.missing:
            assert data is None
            continue
        assert isinstance(data, bytes), entry.name
        if entry.raw is not None or entry.nbformat != 4:
            continue
        nb = nbformat.reads(data.decode(), as_version=nbformat.NO_CONVERT)
        nbformat.validate(nb)  # a hostile notebook, but a well-formed one: ids unique, cells valid
        assert nb.nbformat == 4, entry.name


def test_every_code_cell_compiles(entries):
    """Hostile, not broken: a typo in an entry would prove nothing about the grader."""
    for entry in entries.values():
        if entry.missing or entry.raw is not None or entry.foreign or entry.nbformat != 4:
            continue
        for cell in _cells(entry):
            if cell.cell_type == "code" and not any(
                line.lstrip().startswith(("!", "%")) for line in cell.source.splitlines()
            ):
                compile(cell.source, f"{entry.name}:{cell.id}", "exec")


def test_an_unmutated_entry_is_the_reference_submission(entries):
    assert adversarial.build(entries["reference"]) == nbformat.writes(catalogue.submission(LAB)).encode()


def test_cells_replace_solution_and_locked_cells(entries):
    by_id = _by_id(entries["edit_test_cell"])
    assert by_id["test_kbit_prepared"].source.strip().startswith("pass")
    assert "gradient_checkpointing_enable" in by_id["prepare"].source
    assert "### BEGIN SOLUTION" not in by_id["lora"].source and "get_peft_model" in by_id["lora"].source


def test_delete_removes_the_cells(entries):
    ids = _ids(_cells(entries["delete_test_cell"]))
    assert "test_kbit_prepared" not in ids
    assert len(ids) == len(_reference_cells()) - 1


def test_retype_flips_the_cell_type(entries):
    cells = _by_id(entries["retype_test_to_markdown"])
    assert (
        cells["test_kbit_prepared"].cell_type == "markdown" and "outputs" not in cells["test_kbit_prepared"]
    )


def test_duplicate_and_move_to_end(entries):
    ids = _ids(_cells(entries["duplicate_tests"]))
    assert ids.count("test_lora_config") == 2 and ids.count("test_adapter_trained") == 2
    i = ids.index("test_lora_config")
    assert ids[i + 1] == "test_lora_config"

    ids = _ids(_cells(entries["move_test_after_late_fix"]))
    assert ids[-1] == "test_kbit_prepared" and ids.count("test_kbit_prepared") == 1


def test_inserted_cells_are_learner_cells_in_order(entries):
    cells = _cells(entries["wall_budget"])
    ids = _ids(cells)
    added = cells[ids.index("summary") + 1 :]
    assert len(added) == 8 and all(c.cell_type == "code" and "nbgrader" not in c.metadata for c in added)
    assert len({c.id for c in cells}) == len(cells)

    cells = _cells(entries["os_exit"])
    ids = _ids(cells)
    crash = cells[ids.index("prepare") + 1]
    assert ids[ids.index("prepare") + 1] is None and "os._exit" in crash.source


def test_metadata_and_points_are_tampered(entries):
    cells = _by_id(entries["points_inflated"])
    assert cells["test_bnb_config"].metadata["nbgrader"]["points"] == 100


def test_broken_files(entries):
    for name in ("not_json",):
        with pytest.raises(json.JSONDecodeError):
            json.loads(adversarial.build(entries[name]))
    empty = nbformat.reads(adversarial.build(entries["empty_notebook"]).decode(), as_version=4)
    assert empty.cells == []
    old = nbformat.reads(adversarial.build(entries["nbformat3"]).decode(), as_version=nbformat.NO_CONVERT)
    assert old.nbformat == 3 and "worksheets" in old
    assert adversarial.build(entries["missing"]) is None


def test_foreign_notebook_is_valid_but_of_another_lab(entries):
    nb = nbformat.reads(adversarial.build(entries["foreign_lab"]).decode(), as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)
    ids = {gid for gid in _ids(nb.cells) if gid}
    ours = {gid for gid in _ids(_reference_cells()) if gid}
    assert ids and not ids & ours
    assert any(c.metadata["nbgrader"].get("grade") for c in nb.cells)


def test_write_class_writes_one_folder_per_entry(tmp_path, entries):
    students = adversarial.write_class(tmp_path, [LAB])
    assert set(students) == {f"{LAB}--adv--{name}" for name in entries}
    for student, entry in students.items():
        folder = tmp_path / student
        assert folder.is_dir()
        assert (folder / f"{LAB}.ipynb").exists() == (not entry.missing)
        if not entry.missing:
            assert (folder / f"{LAB}.ipynb").read_bytes() == adversarial.build(entry)


def test_a_bad_entry_is_a_readable_error(entries, monkeypatch, tmp_path):
    entry = dataclasses.replace(entries["edit_test_cell"], cells={"no_such_cell": "pass"})
    with pytest.raises(CourseError, match="no_such_cell"):
        adversarial.build(entry)
    (tmp_path / LAB).mkdir()
    (tmp_path / LAB / "typo.toml").write_text('title = "t"\nthreat = "tamper"\nscore = 1\nfialed = []\n')
    monkeypatch.setattr(adversarial, "ADVERSARIAL", tmp_path)
    with pytest.raises(CourseError, match="fialed"):
        adversarial.entries(LAB)


def test_unexpected_names_every_difference(entries):
    R, C = scores.LabResult, scores.CheckResult
    points = adversarial.max_points(LAB)
    picked = {e.student: e for e in (entries["reference"], entries["delete_test_cell"], entries["missing"])}

    def checks(failed=()):
        return [
            C(name=gid, score=0.0 if gid in failed else p, max_score=p, message="")
            for gid, p in points.items()
        ]

    def result(name, score, max_score=20, reason="", failed=None):
        return R(
            student=f"{LAB}--adv--{name}",
            lab=LAB,
            score=score,
            max_score=max_score,
            reason=reason,
            checks=checks(failed) if failed is not None else [],
        )

    good = [
        result("reference", 20, failed=[]),
        result("delete_test_cell", 16, failed=["test_kbit_prepared"]),
        result("missing", 0, reason="missing submission"),
    ]
    assert adversarial.unexpected(good, picked) == []
    bad = [
        result("reference", 20, reason="autograde failed: boom", failed=[]),
        result("delete_test_cell", 16, max_score=16, failed=["test_lora_config"]),
    ]
    problems = adversarial.unexpected(bad, picked)
    assert any("reference" in p and "boom" in p for p in problems)
    assert any("delete_test_cell" in p and "out of 16" in p for p in problems)
    assert any("delete_test_cell" in p and "lost points on" in p for p in problems)
    assert any("missing" in p and "0 results" in p for p in problems)


# ---------------------------------------------------------------- grading the adversarial class
# The class is graded once per session, with the mistake catalogue (tests/conftest.py: graded_class).
@pytest.mark.slow
def test_adversarial_class_gets_exactly_the_scores_and_reasons(graded_class):
    assert len(graded_class.hostile) >= 30
    assert adversarial.unexpected(graded_class.results, graded_class.hostile) == []


@pytest.mark.slow
def test_adversarial_class_stays_in_its_sandbox(graded_class):
    """No write escaped, no network answered, and no feedback shows the hidden checks' code."""
    assert adversarial.escaped_probes(graded_class.course) == [], "submissions wrote outside their folders"
    for student, entry in graded_class.hostile.items():
        autograded = graded_class.course / "autograded" / student / entry.lab / f"{entry.lab}.ipynb"
        if autograded.exists():  # what the cells printed, not their source (which names the marker)
            cells = nbformat.read(autograded, as_version=4).cells
            printed = "".join(str(o.get("text", "")) for c in cells for o in c.get("outputs", []))
            assert "NETWORK REACHABLE" not in printed, f"{student} reached the network"
        html = graded_class.course / "feedback" / student / entry.lab / f"{entry.lab}.html"
        if html.exists():
            text = html.read_text(errors="replace")
            assert "def kbit_prepared" not in text, f"{student}'s feedback shows the hidden checks"


@pytest.mark.slow
def test_a_hold_reaches_the_gradebook_the_grades_csv_and_the_report(graded_class):
    """Held submissions wait for an instructor in formgrader (needs_manual_grade), in grades.csv and in report.html;
    no honest submission of either catalogue is held."""
    import csv

    held = {s for s, e in graded_class.hostile.items() if e.held}
    assert len(held) >= 6
    rows = {
        (r["student_id"], r["assignment"]): r
        for r in csv.DictReader((graded_class.course / "grades.csv").open())
    }
    for student in held:
        assert rows[student, graded_class.hostile[student].lab]["needs_manual_grade"] == "True", student
    assert rows["reference", "04_qlora"]["needs_manual_grade"] == "False"
    page = (graded_class.course / "report.html").read_text()
    section = page.split("<h2 id='held'>", 1)[1].split("<h2", 1)[0]
    assert all(student in section for student in held)
    assert not [r for r in graded_class.results if r.held and r.student in graded_class.mistakes]
