"""What a submission leaves behind reaches no submission graded after it by the same worker.

The adversarial catalogue's `residue` entries leave a detached process, a thread that keeps changing
transformers and peft, and IPython start-up files and probes in every folder they can reach. One
worker grades them first, then a classmate's mistake (a float32 compute dtype, which the residue would
turn into full marks) and the reference (which the residue would cost its LoRA points). Each must
score exactly what the catalogue says it scores when graded alone; warm kernels (the default) and cold
ones (`kernels="cold"`, kept behind --cold-kernels) alike.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from peft_grader import adversarial, catalogue, grading, warm

LAB = "04_qlora"
VICTIM = "fp32_compute"


def _leftovers() -> list[str]:
    """Processes the residue entries started that are still running anywhere on this machine."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"KERNEL_PID" in (proc / "cmdline").read_bytes() and int(proc.name) != os.getpid():
                found.append(proc.name)
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.parametrize("kernels", ["warm", "cold"])
def test_residue_reaches_no_later_submission(tmp_path, kernels):
    if kernels == "warm" and warm.available():
        pytest.skip(warm.available())
    every = tmp_path / "every"  # both catalogues' classes; the chosen students are moved to subs
    subs = tmp_path / "submissions"
    subs.mkdir()
    hostile = {s: e for s, e in adversarial.write_class(every, [LAB]).items() if e.threat == "residue"}
    victims = {s: e for s, e in catalogue.write_class(every, [LAB]).items() if e is None or e.name == VICTIM}
    for student in [*hostile, *victims]:
        (every / student).rename(subs / student)
    assert len(hostile) == 3 and len(victims) == 2
    # one worker, in the students' order: the three residue entries first, then the two classmates
    assert sorted(hostile) < sorted(victims), "the residue entries must be graded before the classmates"
    results = grading.grade(subs, tmp_path / "course", [LAB], quiet=True, workers=1, kernels=kernels)
    assert adversarial.unexpected(results, hostile) == []
    assert catalogue.unexpected(results, victims) == []
    assert adversarial.escaped_probes(tmp_path / "course") == []
    assert _leftovers() == [], "a process a submission left behind is still running"
