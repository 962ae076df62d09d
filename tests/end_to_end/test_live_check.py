"""The live check (`labutils.check`, issue 17) gives the graded run's verdict and message.

Every mistake-catalogue entry of labs 00, 03 and 04, and their references, is run here as a learner runs
it: the released notebook with the entry's cells, top to bottom in a plain kernel (no sandbox), each
test followed by the `labutils.check` cell the release offers. Each live verdict must equal the graded
class's (tests/conftest.py: graded_class) for that check: passed or not, and the same message (the
mistake and the fix), the grading machine's paths aside.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from labutils.livecheck import MIME
from peft_grader import catalogue
from peft_grader.feedback import scrub_paths

LABS = ["00_setup", "03_rank_alpha", "04_qlora"]


def live_verdicts(notebook: Path, work: Path) -> dict[str, dict]:
    """Run a submission as a learner would; the live check's verdicts, by test."""
    nb = nbformat.read(notebook, as_version=4)
    work.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(work)}}
    )
    client.execute()
    return {
        data["test"]: data
        for cell in nb.cells
        for output in cell.get("outputs", [])
        if (data := output.get("data", {}).get(MIME))
    }


def differences(results, live: dict[tuple[str, str], dict]) -> list[str]:
    """Where a live verdict differs from the graded one, for each graded (student, lab) in `live`."""
    found = []
    for r in results:
        if (r.student, r.lab) not in live:
            continue
        verdicts = live[r.student, r.lab]
        if set(verdicts) != {c.name for c in r.checks}:
            found.append(
                f"{r.student} ({r.lab}): live checks {sorted(verdicts)}, graded {[c.name for c in r.checks]}"
            )
            continue
        for c in r.checks:
            passed, mine = c.score >= c.max_score, verdicts[c.name]
            if mine["passed"] != passed:
                found.append(
                    f"{r.student} {c.name}: live {'passed' if mine['passed'] else mine['message']!r}, graded {c.message or 'passed'!r}"
                )
            elif not passed and scrub_paths(mine["message"]) != scrub_paths(c.message):
                found.append(f"{r.student} {c.name}: live {mine['message']!r}\n  graded {c.message!r}")
    return found


@pytest.mark.slow
def test_live_check_gives_the_graded_verdict_and_message(graded_class, tmp_path):
    submissions = graded_class.course.parent / "submissions"
    runs = [
        (student, lab)
        for student, entry in graded_class.mistakes.items()
        for lab in ([entry.lab] if entry else LABS)
        if lab in LABS
    ]
    entries = [e for lab in LABS for e in catalogue.entries(lab)]
    assert len(runs) == len(LABS) + len(entries)  # the references and every entry of the three labs
    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = {
            run: pool.submit(
                live_verdicts, submissions / run[0] / f"{run[1]}.ipynb", tmp_path / run[0] / run[1]
            )
            for run in runs
        }
        live = {run: future.result() for run, future in futures.items()}
    assert all(live.values()), [run for run, verdicts in live.items() if not verdicts]
    assert differences(graded_class.results, live) == []
    # every wrong entry was caught live, not only passes agreed on
    caught = {run[0] for run, verdicts in live.items() if not all(v["passed"] for v in verdicts.values())}
    assert caught == {f"{e.lab}--{e.name}" for e in entries if not e.correct}
