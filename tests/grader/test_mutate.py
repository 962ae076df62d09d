"""labutils mutate: the mutants each operator makes, and how a graded mutant is sorted (the graded run itself
is in tests/end_to_end/test_mutation_smoke.py)."""

from __future__ import annotations

import ast

import pytest

from labutils.errors import CourseError
from peft_grader import mutate
from peft_grader.nbcourse import labs
from peft_grader.scores import CheckResult, LabResult

CELL = """config = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
model = prepare_model_for_kbit_training(model)
ok = total > 0
"""


def changes(source=CELL):
    return {m.change: m for m in mutate.mutants_of("lab", "cell", source)}


def test_peft_operators_apply_at_every_site():
    found = changes()
    for change in (
        "r=16 -> 32",
        "r=16 -> 8",
        "r=16 -> 128",
        "lora_alpha=32 -> 64",
        "target 'q_proj' dropped",
        "target 'v_proj' dropped",
        "targets swapped for GPT-2's c_attn",
        "task_type= removed",
        "target_modules= removed",
        "prepare_model_for_kbit_training removed",
    ):
        assert change in found, sorted(found)
        assert found[change].kind == mutate.PEFT
    assert "model = model" in found["prepare_model_for_kbit_training removed"].source
    assert "r=8," in found["r=16 -> 8"].source


def test_generic_operators_and_every_mutant_is_a_new_program():
    found = changes()
    assert found["total > 0 -> total >= 0"].kind == mutate.GENERIC
    assert any(change.startswith("statement removed: model = prepare") for change in found)
    sources = [m.source for m in found.values()]
    assert len(set(sources)) == len(sources)
    for source in sources:
        ast.parse(source)
        assert ast.unparse(ast.parse(source)) != ast.unparse(ast.parse(CELL))


def test_a_cell_that_is_not_plain_python_and_an_unknown_lab_say_so():
    with pytest.raises(CourseError, match="not plain Python"):
        mutate.mutants_of("lab", "cell", "%%time\nx = 1\n")
    with pytest.raises(CourseError, match="not a course lab"):
        mutate.mutants("99_nope")


@pytest.mark.parametrize("lab", labs())
def test_every_lab_has_mutants_that_parse(lab):
    found = mutate.mutants(lab)
    assert found
    assert len({m.student for m in found}) == len(found)
    for m in found:
        ast.parse(m.source)


def result(score, messages, reason=""):
    checks = [CheckResult("test_a", 0 if text else 2, 2, text) for text in messages]
    return LabResult("s", "lab", score, 4, reason, checks=checks)


def test_a_graded_mutant_is_killed_only_by_a_named_rule():
    assert mutate.verdict_of(result(2, ["PeftMistake: [rule] r is 8. Fix: r=16."]))[0] == "killed"
    rank = ("Mistake 2", "budget")
    said = ["PeftMistake: [Mistake 2: LoRA rank too high] r=128. Fix: r=16."]
    assert mutate.verdict_of(result(2, said), rank)[0] == "killed"
    said = ["PeftMistake: [Mistake 4: Saving merged model] full weights. Fix: save the adapter."]
    assert mutate.verdict_of(result(2, said), rank)[0] == "killed elsewhere"
    assert mutate.verdict_of(result(4, []))[0] == "survived"
    assert mutate.verdict_of(result(2, ["NameError: name 'model' is not defined"]))[0] == "broken"
    assert mutate.verdict_of(result(0, [], reason="the notebook timed out"))[0] == "broken"


def test_each_peft_operator_names_the_mistake_its_kill_must_name():
    found = changes()
    assert mutate.intended(found["r=16 -> 128"]) == ("Mistake 2", "budget", "2x rank")
    assert mutate.intended(found["prepare_model_for_kbit_training removed"]) == ("Mistake 3",)
    assert mutate.intended(found["total > 0 -> total >= 0"]) == ()  # generic: any named rule
    for lab in labs():
        for m in mutate.mutants(lab, (mutate.PEFT,)):
            assert mutate.intended(m), f"{lab} {m.change}: no intended rule"


def test_save_operators_and_the_moved_preparation():
    source = """model = prepare_model_for_kbit_training(model)
model = get_peft_model(model, config)
model.save_pretrained(ADAPTER_DIR)
tokenizer.save_pretrained(ADAPTER_DIR)
"""
    found = changes(source)
    assert (
        "model.merge_and_unload().save_pretrained(ADAPTER_DIR)"
        in found["merge_and_unload() before save_pretrained"].source
    )
    assert "model.save_pretrained('saved-elsewhere')" in found["saved into another folder"].source
    moved = found["prepare_model_for_kbit_training moved after get_peft_model"].source.splitlines()
    assert moved[:2] == [
        "model = get_peft_model(model, config)",
        "model = prepare_model_for_kbit_training(model)",
    ]
    assert not any("tokenizer.merge" in m.source for m in found.values())
    deploy = changes(
        "merged = PeftModel.from_pretrained(base, ADAPTER_DIR).merge_and_unload()\nmerged.save_pretrained(DEPLOY)\n"
    )
    # a merged model's save: merging it again is no mistake, only a crash
    assert "saved into another folder" in deploy
    assert "merge_and_unload() before save_pretrained" not in deploy


def test_the_triage_file_names_real_mutants_with_reasons():
    known = mutate.triage()
    everything = [m for lab in labs() for m in mutate.mutants(lab)]
    for key, reason in known.items():
        assert reason.strip()
        assert any(mutate.equivalent_reason(m, {key: reason}) for m in everything), key  # no stale entry


def test_a_triage_pattern_stars_any_text_and_nothing_else():
    m = changes()["r=16 -> 128"]
    reason = {("lab", "*", "r=16 -> *"): "any rank"}
    assert mutate.equivalent_reason(m, reason) == "any rank"
    assert mutate.equivalent_reason(m, {(m.lab, "*", "r=1? -> 128"): "no"}) == ""  # ? is itself
    assert mutate.equivalent_reason(m, {(m.lab, "*", "r=[1]6 -> 128"): "no"}) == ""  # so is [
    assert mutate.equivalent_reason(m, {(m.lab, "other", "*"): "no"}) == ""
