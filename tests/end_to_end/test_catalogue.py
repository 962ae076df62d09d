"""Every hidden check is proven: the reference and each catalogue entry get exactly their scores.

This autogrades through the real nbgrader pipeline (generate_assignment, autograde, feedback,
export), each submission running the whole lab on the tiny models.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import nbformat
import pytest

from peft_grader import catalogue, grading, nbcourse, report, scores


@pytest.mark.slow
def test_every_entry_scores_exactly_its_points(graded_class):
    """Graded once per session with the adversarial catalogue (tests/conftest.py: graded_class)."""
    graded = {r.student for r in graded_class.results if r.reason != "missing submission"}
    assert set(graded_class.mistakes) <= graded
    assert catalogue.unexpected(graded_class.results, graded_class.mistakes) == []


def test_every_lab_has_a_proven_catalogue():
    """At least four entries per lab, wrong ones and a correct variant, each wrong one losing points, and
    every autograded test cell of the lab failed by some wrong entry (a check nothing fails is unproven)."""
    from peft_grader import adversarial

    for lab in nbcourse.labs():
        entries = catalogue.entries(lab)
        unproven = set(adversarial.max_points(lab)) - {check for e in entries for check in e.failed}
        assert not unproven, f"{lab}: no catalogue entry fails {sorted(unproven)}"
        assert len(entries) >= 4, f"{lab}: {len(entries)} catalogue entries, expected at least 4"
        assert any(e.correct for e in entries), f"{lab}: no correct variant"
        assert all(e.failed for e in entries if not e.correct), f"{lab}: a wrong entry loses nothing"


def test_every_guide_mistake_is_in_the_catalogue():
    entries = [e for lab in nbcourse.labs() for e in catalogue.entries(lab)]
    assert len([e for e in entries if not e.correct]) >= 12
    assert len([e for e in entries if e.correct]) >= 4
    for number in (1, 2, 3, 4, 5):
        assert any(e.mistake == f"Mistake {number}" for e in entries), f"no entry commits mistake {number}"


@pytest.mark.slow
def test_feedback_and_grades_csv_are_written(graded_class):
    course = graded_class.course
    rows = list(csv.DictReader((course / "grades.csv").open()))
    assert {r["student_id"] for r in rows} == set(graded_class.mistakes) | set(graded_class.hostile)
    reference = next(r for r in rows if r["student_id"] == "reference" and r["assignment"] == "04_qlora")
    assert float(reference["score"]) == float(reference["max_score"]) > 0
    html = (course / "feedback" / "reference" / "04_qlora" / "04_qlora.html").read_text()
    assert "def kbit_prepared" not in html and "RANK_RANGE" not in html, "feedback must not show check logic"
    wrong = (course / "feedback" / "04_qlora--no_kbit_prep" / "04_qlora" / "04_qlora.html").read_text()
    assert "Mistake 3" in wrong and "prepare_model_for_kbit_training" in wrong


# What no feedback file may show: the hidden tests, the checks' code or files, a traceback, this machine's paths.
FEEDBACK_LEAKS = (
    "BEGIN HIDDEN TESTS",
    "def kbit_prepared",
    "grader/checks",
    "checks/",
    "Traceback (most recent",
)


@pytest.mark.slow
def test_feedback_shows_verdicts_not_checks(graded_class):
    """Every feedback file of the graded catalogues: each failing check's message is there, and nothing of
    the checks is (their source, a traceback into them, the grading machine's paths)."""
    course = graded_class.course
    machine = [str(nbcourse.REPO), str(course.resolve()), str(course.resolve().parent)]
    files = sorted((course / "feedback").rglob("*.html"))
    assert len(files) >= len(graded_class.mistakes)
    for html in files:
        text = html.read_text(errors="replace")
        leaks = [marker for marker in (*FEEDBACK_LEAKS, *machine) if marker in text]
        assert not leaks, f"{html.relative_to(course)} shows {leaks}"
    wrong = (course / "feedback" / "04_qlora--fp4" / "04_qlora" / "04_qlora.html").read_text()
    assert "nf4" in wrong and "Fix:" in wrong


@pytest.mark.slow
def test_no_score_depends_on_speed(graded_class):
    """Every catalogue notebook's cells finished with at least 4x margin under the per-cell timeout they
    were graded with (the course's, or a longer one a master declares for a training cell), so a slower CPU
    or a loaded machine cannot turn into lost points."""
    slow = {}
    for student, entry in graded_class.mistakes.items():
        for lab in [entry.lab] if entry else nbcourse.labs():
            notebook = graded_class.course / "autograded" / student / lab / f"{lab}.ipynb"
            cell, longest, limit = scores.nearest_timeout(notebook, lab, graded_class.timeout)
            if longest * 4 > limit:
                slow[f"{student} ({lab}) {cell}"] = f"{longest:.1f} of {limit} s"
    assert slow == {}, f"cells over a quarter of their per-cell timeout: {slow}"


@pytest.mark.slow
def test_summary_table_names_each_lost_point(graded_class):
    table = report.summary_table(graded_class.results)
    assert "reference" in table
    assert "04_qlora--fp4" in table and "nf4" in table


@pytest.mark.slow
def test_interrupted_serial_run_resumes_to_the_catalogue_scores(tmp_path):
    """Kill a serial grading run after its first student and re-run it: every score is the one the
    catalogue promises (the same the parallel class run must give), and the student graded before the
    interruption is not graded again; a third run changes nothing."""
    picked = {"04_qlora--fp4": None, "04_qlora--no_kbit_prep": None, "reference": None}
    entries = {f"04_qlora--{e.name}": e for e in catalogue.entries("04_qlora")}
    subs = tmp_path / "subs"
    for student in picked:
        picked[student] = entries.get(student)
        (subs / student).mkdir(parents=True)
        nb = catalogue.submission("04_qlora", picked[student].cells if picked[student] else None)
        nbformat.write(nb, subs / student / "04_qlora.ipynb")
    out = tmp_path / "course"
    first = out / "results" / "04_qlora" / "04_qlora--fp4.json"
    run = subprocess.Popen(
        [sys.executable, "-m", "labutils.cli", "grade", str(subs), "--out", str(out), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 1800  # generous: a loaded machine grades slowly
    while not first.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(1)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert first.exists() and not (out / "results" / "04_qlora" / "reference.json").exists()
    graded_before = first.stat().st_mtime_ns

    resumed = grading.grade(subs, out, quiet=True, workers=1)
    assert first.stat().st_mtime_ns == graded_before, "a finished student was graded again"
    assert catalogue.unexpected(resumed, picked) == []
    rows = {r["student_id"]: r["score"] for r in csv.DictReader((out / "grades.csv").open())}
    assert rows == {r.student: f"{r.score:.1f}" for r in resumed}

    again = grading.grade(subs, out, quiet=True)  # idempotent: nothing changes, nothing is regraded
    assert [(r.student, r.score, r.reason) for r in again] == [
        (r.student, r.score, r.reason) for r in resumed
    ]
    assert first.stat().st_mtime_ns == graded_before


@pytest.mark.slow
def test_class_report_counts_each_mistake_as_the_catalogue_expects(graded_class, tmp_path):
    """report.html of the catalogue class: per lab, the students who made each rule's mistake (their first
    lost point) are exactly the catalogue's wrong entries that commit it, and the page shows those counts."""
    import html
    from collections import Counter

    assert (graded_class.course / report.REPORT).is_file()  # `labutils grade` wrote it beside grades.csv
    results = [r for r in graded_class.results if r.student in graded_class.mistakes]
    entries = [e for e in graded_class.mistakes.values() if e is not None and not e.correct]
    labels = {lab: {e.mistake for e in entries if e.lab == lab} for lab in nbcourse.labs()}

    def label(lab: str, rule: str) -> str:  # "Mistake 3: Not using ..." -> the catalogue's "Mistake 3"
        return max((m for m in labels[lab] if rule.startswith(m)), key=len, default=rule)

    made = report.mistakes_by_lab(results)
    found = Counter(
        {
            (lab, label(lab, rule)): len(first)
            for lab, rules in made.items()
            for rule, (first, _) in rules.items()
            if first
        }
    )
    assert found == Counter((e.lab, e.mistake) for e in entries)
    honest = {s for s, e in graded_class.mistakes.items() if e is None or e.correct}
    assert (
        not {s for rules in made.values() for first, later in rules.values() for s in first + later} & honest
    )
    page = report.write_html(results, tmp_path).read_text()
    for lab, rules in made.items():
        for rule, (first, later) in rules.items():
            row = f"<tr><td>{html.escape(rule)}</td><td class='n'>{len(first)}</td><td class='n'>{len(later)}</td>"
            assert row in page, f"{lab}: {rule}"
    assert page.count("<img ") == len({r.lab for r in results if not r.reason})
    assert (
        "<script" not in page and "src='http" not in page
    )  # one self-contained page: charts are data: images


@pytest.mark.slow
def test_feedback_opens_with_a_tutors_note(graded_class):
    """nbgrader's feedback file, with a note on top: the score, then each lost point's mistake and fix,
    linked to the section of the lab that teaches it."""
    feedback = graded_class.course / "feedback"
    wrong = (feedback / "04_qlora--no_kbit_prep" / "04_qlora" / "04_qlora.html").read_text()
    start = wrong.index('id="tutor-note"')
    note = wrong[start : wrong.index("</div>", start)]  # the note alone, not the lab's own lists below it
    assert "Your score: 16 of 20 points" in note
    assert 'href="#learn-test_kbit_prepared"' in note and "Mistake 3" in note and "Fix:" in note
    assert 'id="learn-test_kbit_prepared"' in wrong  # the link lands on the section that teaches it
    assert note.count("<li>") == 1  # one line per lost point: only the kbit check lost any
    right = (feedback / "reference" / "04_qlora" / "04_qlora.html").read_text()
    assert "Every autograded check passed" in right
