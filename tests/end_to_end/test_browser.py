"""End-to-end journeys in a real browser (Debian chromium through Playwright).

* Learner: `make lab` on a fresh copy of notebooks/, a lab's exercise cells filled in the JupyterLab editor
  with the reference answers, Run All, nbgrader's Validate button reads success; then one mistake of the
  lab's catalogue typed in, and the validate dialog shows the visible test's hint that names it.
* Instructor: a small class graded by `peft_grader.grading.grade`, `make grade-ui COURSE=...`, formgrader
  opened from JupyterLab's Nbgrader menu shows the assignments, the submissions and their scores; the
  rank lab's written answer is graded by hand in formgrader and the grade appears in `nbgrader export`.

Screenshots go to out/screenshots/<journey>/ (printed); two are copied to tests/screenshots/ for the README.
They skip only when no chromium can be found (`make setup` installs it as root with apt-get).
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from browser_helpers import (
    CHROMIUM_FLAGS,
    REPO,
    Server,
    close_dialog,
    code_cell_prompts,
    find_chromium,
    open_notebook,
    run_all,
    set_cell_source,
    tracebacks,
    validate,
)
from playwright.sync_api import expect

from peft_grader import report

# The learner journey's lab: the fastest lab that exists, the catalogue entry it types in (one that fails
# a VISIBLE test: `nbgrader validate` runs no hidden test) and the words of that visible test's hint.
LEARNER = {
    "lab": "00_setup",
    "mistake": "emulation_trap",  # is_bf16_supported() without including_emulation=False
    "hint": ["On a Colab T4 choose_compute_dtype() gives torch.bfloat16", "the trap in section 3"],
}
# LEARNER = {"lab": "04_qlora", "mistake": "no_kbit_prep", "hint": ["prepare_model_for_kbit_training"]}

# The instructor journey's lab: the one with a written answer graded by hand, and its sample class.
MANUAL_LAB = "03_rank_alpha"
MANUAL_CELL = "justify"  # grade_id of its markdown answer cell
MANUAL_STUDENT = "reference"
SAMPLE_MISTAKE = "rank_64"  # a second student: this catalogue entry, to show a lost point

CHROMIUM = find_chromium()
SCREENSHOTS = REPO / "out" / "screenshots"
COMMITTED = REPO / "tests" / "screenshots"
UI_MS = 60_000  # one UI step on a loaded 2-core machine
RUN_MS = 300_000  # running a whole lab, or validating it (nbgrader runs it again)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no chromium found: the browser tests need Debian's chromium (`make setup` installs it as "
        "root with apt-get; or `apt-get install chromium`)",
    ),
]


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(UI_MS)
            yield page
        finally:
            browser.close()


def _shots(capsys, journey: str) -> Path:
    folder = SCREENSHOTS / journey
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with capsys.disabled():  # shown in the test log even when output is captured
        print(f"\n{journey} screenshots: {folder}")
    return folder


def _publish(shot: Path, name: str) -> None:
    """Refresh a README screenshot in tests/screenshots/, only when asked: a test run leaves the tree clean."""
    if os.environ.get("PEFT_COURSE_UPDATE_SCREENSHOTS") == "1":
        COMMITTED.mkdir(exist_ok=True)
        shutil.copyfile(shot, COMMITTED / name)


def _cell_index(nb, grade_id: str) -> int:
    for i, cell in enumerate(nb.cells):
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return i
    raise AssertionError(f"no cell with grade_id {grade_id}")


def _source(path: Path, grade_id: str) -> str:
    nb = nbformat.read(path, as_version=4)
    return nb.cells[_cell_index(nb, grade_id)].source


# ---------------------------------------------------------------- learner
def test_learner_validates_in_jupyterlab(capsys, browser_page, tmp_path):
    from peft_grader import catalogue

    lab, page = LEARNER["lab"], browser_page
    shots = _shots(capsys, "learner")
    copy = tmp_path / "notebooks"
    shutil.copytree(REPO / "notebooks", copy)
    notebook = copy / f"{lab}.ipynb"
    released = nbformat.read(notebook, as_version=4)
    reference = catalogue.submission(lab, release_dir=copy)
    answers = {
        cell.metadata["nbgrader"]["grade_id"]: cell.source
        for cell in reference.cells
        if cell.metadata.get("nbgrader", {}).get("solution") and cell.cell_type == "code"
    }
    assert answers, f"{lab} has no exercise cells"
    [entry] = [e for e in catalogue.entries(lab) if e.name == LEARNER["mistake"]]

    with Server("lab", {"LAB_DIR": str(copy)}, tmp_path / "server") as server:
        start = time.monotonic()
        open_notebook(page, server, f"{lab}.ipynb", RUN_MS)
        for grade_id, answer in answers.items():
            set_cell_source(page, _cell_index(released, grade_id), answer)
        run_all(page, RUN_MS)
        prompts = code_cell_prompts(page)
        assert all(any(ch.isdigit() for ch in p) for p in prompts), f"cells left unrun: {prompts}"
        assert not tracebacks(page), tracebacks(page)
        page.screenshot(path=shots / "1-reference-run.png")
        # the dialog's screenshot shows an answered exercise behind it
        first = page.locator(".jp-NotebookPanel .jp-Cell").nth(_cell_index(released, next(iter(answers))))
        first.evaluate("cell => cell.scrollIntoView({block: 'start'})")
        dialog = validate(page, RUN_MS)
        page.screenshot(path=shots / "2-validate-success.png")
        assert dialog.locator(".validation-success").count() == 1, dialog.inner_text()
        assert "Success! Your notebook passes all the tests." in dialog.inner_text()
        _publish(shots / "2-validate-success.png", "learner_validate_success.png")
        close_dialog(page)
        for grade_id in answers:  # the notebook was edited in the browser and saved by Validate
            assert _source(notebook, grade_id).strip() == answers[grade_id].strip(), grade_id

        for grade_id, wrong in entry.cells.items():
            set_cell_source(page, _cell_index(released, grade_id), wrong)
        run_all(page, RUN_MS)
        page.screenshot(path=shots / "3-mistake-run.png")
        dialog = validate(page, RUN_MS)
        page.screenshot(path=shots / "4-validate-mistake.png")
        text = dialog.inner_text()
        assert dialog.locator(".validation-failed").count() == 1, text
        # the dialog shows each failed cell's source, then its error: read the errors only
        errors = "\n".join(dialog.locator(".jp-RenderedText").all_inner_texts()[1::2])
        for words in LEARNER["hint"]:
            assert words in errors, f"the validate dialog does not name the mistake ({words!r}):\n{text}"
        close_dialog(page)
        for grade_id, wrong in entry.cells.items():
            assert _source(notebook, grade_id).strip() == wrong.strip(), grade_id
        print(f"learner journey in the browser: {time.monotonic() - start:.0f} s after the server started")


# ---------------------------------------------------------------- instructor
def _export(course: Path, target: Path) -> dict[str, dict]:
    """`nbgrader export` of the course as the instructor runs it; rows of MANUAL_LAB by student."""
    from peft_grader import nbcourse

    nbcourse.nbgrader(course, "export", "--to", str(target))
    with target.open() as f:
        return {row["student_id"]: row for row in csv.DictReader(f) if row["assignment"] == MANUAL_LAB}


def test_instructor_grades_in_formgrader(capsys, browser_page, tmp_path):
    from peft_grader import catalogue, grading

    page = browser_page
    shots = _shots(capsys, "instructor")
    [entry] = [e for e in catalogue.entries(MANUAL_LAB) if e.name == SAMPLE_MISTAKE]
    students = {MANUAL_STUDENT: None, f"{MANUAL_LAB}--{entry.name}": entry}
    for student, chosen in students.items():
        target = tmp_path / "submissions" / student / f"{MANUAL_LAB}.ipynb"
        target.parent.mkdir(parents=True)
        nbformat.write(catalogue.submission(MANUAL_LAB, chosen.cells if chosen else None), target)
    course = tmp_path / "course"
    results = {
        r.student: r
        for r in grading.grade(tmp_path / "submissions", course, only=[MANUAL_LAB], quiet=True, workers=2)
    }
    assert not [r.reason for r in results.values() if r.reason], results
    reference = results[MANUAL_STUDENT]
    assert reference.manual_points > 0, f"{MANUAL_LAB} has no written answer graded by hand"
    before = _export(course, tmp_path / "before.csv")
    assert float(before[MANUAL_STUDENT]["score"]) == reference.score  # no manual grade yet

    with Server("grade-ui", {"COURSE": str(course)}, tmp_path / "server") as server:
        page.goto(server.url("lab?reset"))
        page.locator(".lm-MenuBar-itemLabel", has_text="Nbgrader").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Formgrader").first.click()
        frame = page.frame_locator("iframe[src*='formgrader']").first
        rows = frame.locator("#main-table tr")
        rows.filter(has_text=MANUAL_LAB).first.wait_for()  # Manage Assignments lists the course's labs
        page.screenshot(path=shots / "1-assignments.png")

        frame.get_by_role("link", name="Manual Grading").click()
        frame.locator(".breadcrumb li.active", has_text="Manual Grading").wait_for()
        rows.get_by_role("link", name=MANUAL_LAB, exact=True).click()  # the assignment ...
        frame.locator(".breadcrumb li.active", has_text=MANUAL_LAB).wait_for()
        rows.get_by_role("link", name=MANUAL_LAB, exact=True).click()  # ... then its notebook
        expect(rows.filter(has_text="Submission #")).to_have_count(len(students))
        frame.locator("#toggle_names").click()  # student ids instead of "Submission #n"
        student_link = rows.locator("a.name-shown", has_text=MANUAL_STUDENT)
        student_link.wait_for()
        table = frame.locator("table.table").inner_text()
        for student, result in results.items():
            row = rows.filter(has_text=student).first.inner_text()
            # overall score: autograded points out of all points, the written answer's included
            assert f"{result.score:g} / {result.max_score + result.manual_points:g}" in row, table
        page.screenshot(path=shots / "2-submissions.png")
        _publish(shots / "2-submissions.png", "formgrader_submissions.png")

        student_link.click()
        score = frame.locator(f"input.score#{MANUAL_CELL}")
        score.scroll_into_view_if_needed()
        given = reference.manual_points - 1  # part of the points: clearly a human's grade
        with page.expect_response(
            lambda r: "/formgrader/api/grade/" in r.url and r.request.method == "PUT" and r.ok
        ):
            score.fill(f"{given:g}")
            score.press("Tab")  # formgrader saves a score when its input changes
        page.screenshot(path=shots / "3-manual-grade.png")

    after = _export(course, tmp_path / "after.csv")
    assert float(after[MANUAL_STUDENT]["score"]) == reference.score + given, after[MANUAL_STUDENT]
    mistaken = f"{MANUAL_LAB}--{entry.name}"
    assert float(after[mistaken]["score"]) == results[mistaken].score == entry.score


def test_instructor_reads_the_class_report(capsys, browser_page, graded_class):
    """report.html of the graded catalogue class, offline in Chromium: every chart renders, and the
    sections an instructor looks for are there."""
    shots = _shots(capsys, "report")
    page = browser_page
    page.route(
        "**/*", lambda route: route.abort() if route.request.url.startswith("http") else route.continue_()
    )
    page.goto((graded_class.course / report.REPORT).resolve().as_uri())
    widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
    graded_labs = {r.lab for r in graded_class.results if not r.reason}
    assert len(widths) == len(graded_labs) and all(w > 0 for w in widths), widths
    for section in ("#most-failed", "#not-graded", "#lab-04_qlora"):
        assert page.locator(section).is_visible()
    assert page.locator("#not-graded + table tr").count() > 1  # the hostile class's ungradeable submissions
    page.set_viewport_size({"width": 1300, "height": 1000})
    page.evaluate("document.getElementById('lab-04_qlora').scrollIntoView()")
    page.screenshot(path=shots / "1-qlora-lab.png")
    _publish(shots / "1-qlora-lab.png", "class_report.png")
