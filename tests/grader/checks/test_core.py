"""The shared core of the hidden checks (grader/checks/__init__.py and the manifest readers of
grader/checks/inspect_model.py): the failure's wording, the learner's variables, and whether a model's manifest
carries LoRA where a lab wants it. Hand-made records, no torch."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest


@pytest.fixture
def core(hidden_check):
    hidden_check("evidence")  # grader/ on sys.path
    return importlib.import_module("checks")


@pytest.fixture
def inspect_model(hidden_check):
    return hidden_check("inspect_model")


def test_a_failure_names_the_guides_mistake_or_the_rule_then_the_fix(core):
    with pytest.raises(core.PeftMistake) as numbered:
        core.fail(4, "merged weights were saved.", "save the adapter only.")
    assert str(numbered.value) == (
        "[Mistake 4: Saving merged model when adapter should be separate] merged weights were saved. "
        "Fix: save the adapter only."
    )
    with pytest.raises(core.PeftMistake) as named:
        core.fail(core.TRAINED_ADAPTER, "nothing was saved.", "save it.")
    assert str(named.value) == f"[{core.TRAINED_ADAPTER}] nothing was saved. Fix: save it."
    assert issubclass(core.PeftMistake, AssertionError)  # a failed hidden test cell, as nbgrader counts it


def test_need_returns_the_learners_variable_of_the_right_type(core):
    assert core.need({"ADAPTER_DIR": Path("out")}, "ADAPTER_DIR", (str, Path)) == Path("out")
    assert core.need({"r": 16}, "r") == 16  # no type asked: anything defined


def test_need_names_a_missing_variable_and_where_to_define_it(core, verdict):
    message = verdict(lambda ns: core.need(ns, "bnb_config", dict, where="the loading cell"), {})
    assert message == "`bnb_config` is not defined. Fix: define `bnb_config` in the loading cell and run it."


@pytest.mark.parametrize(
    ("kind", "names"), [(dict, "a dict"), ((str, Path), "a str or Path")], ids=["one", "several"]
)
def test_need_names_the_wrong_type_and_the_types_wanted(core, verdict, kind, names):
    message = verdict(lambda ns: core.need(ns, "ADAPTER_DIR", kind), {"ADAPTER_DIR": 3})
    assert message.startswith(f"`ADAPTER_DIR` is a int, not {names}.")
    assert "Fix: assign the real object to `ADAPTER_DIR`." in message


# ---- the manifest's readers -------------------------------------------------------------------------
BERT = ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.attention.self.key",
        "bert.encoder.layer.0.attention.self.value", "bert.encoder.layer.0.attention.output.dense"]  # fmt: skip


def bert(wrapped=("query", "value"), targets=("query", "value")):
    """A BERT classifier's manifest: wrapped by get_peft_model with LoRA on the `wrapped` leaves (None: never)."""
    peft = wrapped is not None
    prefix = "base_model.model." if peft else ""
    modules = {prefix + n: "lora" if peft and n.rsplit(".", 1)[-1] in wrapped else "" for n in BERT}
    return {
        "peft": peft,
        "active_adapter": ["default"] if peft else None,  # a list where several adapters are active
        "modules": {"": ""} | modules,
        "peft_config": {"default": {"target_modules": sorted(targets)}} if peft else {},
        "lora_config_targets": sorted(targets) if targets is not None else None,
    }


def test_require_lora_model_accepts_a_peft_models_manifest(inspect_model):
    inspect_model.require_lora_model(bert(), "BERT", "target query and value.")  # no failure


@pytest.mark.parametrize(
    ("targets", "words"),
    [
        (("q_proj", "v_proj"), "target_modules ['q_proj', 'v_proj'] match no module of this BERT model (those are Llama names)"),
        (("dense_layer",), "target_modules ['dense_layer'] match no module of this BERT model, so get_peft_model raised"),
        (("query", "value"), "`model` is not a PeftModel, so no LoRA adapter is attached. Fix: model = get_peft_model("),
        (None, "`model` is not a PeftModel"),
    ],
    ids=["foreign_names", "unknown_names", "never_wrapped", "no_config"],
)  # fmt: skip
def test_require_lora_model_says_why_nothing_was_wrapped(inspect_model, verdict, targets, words):
    def check(record):
        inspect_model.require_lora_model(
            record, "BERT", "target query and value.", ("Llama", ["q_proj", "v_proj"])
        )

    message = verdict(check, bert(wrapped=None, targets=targets))
    assert message.startswith("[Mistake 1: Wrong target_modules for model architecture]") and words in message
    if "match no module" in words:
        assert message.endswith("Fix: target query and value.")


def test_require_adapters_on_returns_what_is_wrapped(inspect_model):
    wrapped = inspect_model.require_adapters_on(bert(), ("query", "value"), "BERT", "target query and value.")
    assert wrapped == {f"base_model.model.{n}" for n in BERT[0::2]}


def test_require_adapters_on_names_each_wanted_module_without_an_adapter(inspect_model, verdict):
    def check(record):
        inspect_model.require_adapters_on(record, ("query", "key", "value"), "BERT", "add key.")

    message = verdict(check, bert())
    assert message.startswith("[Mistake 1: Wrong target_modules")
    assert (
        "1 BERT attention projections carry no adapter (key missing; target_modules was ['query', 'value'])"
        in message
    )
    assert message.endswith("Fix: add key.")


def test_a_library_object_with_a_method_stored_on_itself_is_refused(core):
    """checks.unaltered: a function stored in an object's own attributes wins over its class's method and would run
    inside the check (found by red-teaming: an apply_chat_template stored on the tokenizer)."""

    class Tokenizer:
        def apply_chat_template(self, *args):
            return "the library's"

    honest = Tokenizer()
    honest.chat_template = "{{ messages }}"  # data on the object is its own business
    assert core.unaltered(honest, "tokenizer") is honest
    lying = Tokenizer()
    lying.apply_chat_template = lambda *args: "the learner's"
    with pytest.raises(
        AssertionError, match=r"`tokenizer.apply_chat_template` is a function stored on the object"
    ):
        core.unaltered(lying, "tokenizer")
