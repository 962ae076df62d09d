"""labutils mutate, graded for real on two mutants of lab 01: one the checks kill, one equivalent answer."""

from __future__ import annotations

import pytest

from peft_grader import mutate

pytestmark = pytest.mark.slow

KILL = "r=16 -> 128"  # the guide's mistake 2: a rank that wastes resources
EQUIVALENT = "statement removed: model.print_trainable_parameters()"  # a print only (mutation_triage.toml)


def test_one_known_kill_and_one_known_equivalent(tmp_path):
    outcomes = mutate.run(["01_lora_anatomy"], tmp_path, workers=2, quiet=True, changes={KILL, EQUIVALENT})
    verdicts = {o.mutant.change: o for o in outcomes}
    assert verdicts[KILL].verdict == "killed", verdicts[KILL]
    assert any("Mistake 2" in text for text in verdicts[KILL].said)
    assert verdicts[EQUIVALENT].verdict == "equivalent", verdicts[EQUIVALENT]
    assert verdicts[EQUIVALENT].score == verdicts[EQUIVALENT].max_score
    shown = (tmp_path / "mutation.md").read_text()
    assert "| 01_lora_anatomy | peft | 1 | 1 | 0 | 0 | 0 | 0 | 100% |" in shown
    assert "print_trainable_parameters" in shown  # the equivalent answer, listed with its reason
