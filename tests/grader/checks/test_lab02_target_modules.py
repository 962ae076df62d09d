"""Lab 02's hidden checks (grader/checks/lab02_target_modules/) on real tiny models: BERT and GPT-2 only, to stay fast."""

from __future__ import annotations

import pytest


@pytest.fixture
def targets(hidden_check):
    return hidden_check("lab02_target_modules.kernel")


def qkv_by_scan(model):
    names = {
        "q_proj",
        "k_proj",
        "v_proj",
        "query",
        "key",
        "value",
        "q",
        "k",
        "v",
        "c_attn",
        "query_key_value",
    }
    return sorted({n.rsplit(".", 1)[-1] for n, _ in model.named_modules()} & names)


@pytest.mark.parametrize("role", ["classifier", "gpt2"])
def test_valid_answers_pass(targets, role):
    assert targets.problem(role, role, qkv_by_scan) == ""
    regex = r".*\.(query|key|value|c_attn)"
    assert targets.problem(role, role, lambda model: regex) == ""
    with_output = {
        "classifier": ["query", "key", "value", "attention.output.dense"],
        "gpt2": ["attn.c_attn", "attn.c_proj"],
    }
    assert targets.problem(role, role, lambda model: tuple(with_output[role])) == ""


def test_not_found_partial_and_too_much_are_named(targets, hidden_check):
    llama_names = targets.problem("gpt2", "GPT-2", lambda model: ["q_proj", "k_proj", "v_proj", "o_proj"])
    assert "GPT-2 (gpt2)" in llama_names and "not found in the base model" in llama_names
    partial = targets.problem("classifier", "BERT", lambda model: ["query", "value", "q_proj"])
    assert "missed 2 attention projections" in partial and "attention.self.key" in partial
    assert "partial match is silent" in partial
    peft_model, wrapped = targets.wrap_with(targets.load_tiny("classifier"), "all-linear")
    judges = hidden_check("lab02_target_modules.judges")
    stray = {judges._pattern(n) for n in targets.compare(peft_model, wrapped).stray}
    assert {"bert.encoder.layer.N.intermediate.dense", "bert.pooler.dense", "classifier"} <= stray
    assert not any("attention" in n for n in stray)  # the optional output projection is not a stray
    mlp_c_proj = targets.problem("gpt2", "GPT-2", lambda model: ["c_attn", "c_proj"])
    assert "mlp.c_proj" in mlp_c_proj and "attn.c_proj" not in mlp_c_proj


def test_learner_errors_and_bad_returns_are_verdicts(targets):
    def lookup(model):
        return {"llama": ["q_proj"]}[model.config.model_type]

    assert "raised KeyError" in targets.problem("gpt2", "GPT-2", lookup)
    assert "not a non-empty list" in targets.problem("gpt2", "GPT-2", lambda model: None)
    assert "not a non-empty list" in targets.problem("gpt2", "GPT-2", lambda model: [])


def test_lora_model_needs_attention_only_and_a_saved_head(targets):
    from peft import LoraConfig, get_peft_model

    def wrapped(**kwargs):
        return get_peft_model(
            targets.load_tiny("classifier"), LoraConfig(**{"r": 8, "lora_alpha": 16} | kwargs)
        )

    targets.lora_model({"lora_model": wrapped(target_modules=["query", "key", "value"], task_type="SEQ_CLS")})
    targets.lora_model(
        {"lora_model": wrapped(target_modules=["query", "key", "value"], modules_to_save=["classifier"])}
    )
    with pytest.raises(AssertionError, match="Mistake 5"):
        targets.lora_model({"lora_model": wrapped(target_modules=["query", "key", "value"])})
    with pytest.raises(AssertionError, match=r"Mistake 1.*classifier.*Fix: .*SEQ_CLS"):
        targets.lora_model({"lora_model": wrapped(target_modules=["query", "key", "value", "classifier"])})
    with pytest.raises(AssertionError, match=r"Mistake 1.*attention\.self\.key"):
        targets.lora_model({"lora_model": wrapped(target_modules=["query", "value"], task_type="SEQ_CLS")})
    with pytest.raises(
        AssertionError, match=r"Mistake 2.*r=128, lora_alpha=16; the exercise asks for r=8, lora_alpha=16"
    ):
        targets.lora_model(
            {"lora_model": wrapped(target_modules=["query", "key", "value"], task_type="SEQ_CLS", r=128)}
        )
    with pytest.raises(AssertionError, match="not defined"):
        targets.lora_model({})


def test_messages_quote_peft_sets_in_one_order(hidden_check):
    """peft's "Target modules {...} not found" prints a Python set, whose order follows the process's hash
    seed: the live check (one process) and the graded run (another) must still print the same message."""
    hidden_check("lab03_rank_alpha.kernel")  # puts grader/ on sys.path, as the hidden cells find it
    import checks

    orders = ["{'query', 'key', 'value'}", "{'value', 'query', 'key'}"]
    texts = {
        checks.error_text(ValueError(f"Target modules {o} not found in the base model.")) for o in orders
    }
    assert texts == {"Target modules {'key', 'query', 'value'} not found in the base model."}
    assert checks.error_text(KeyError("llama")) == "'llama'"  # a lone quoted name is not a set
    assert checks.error_text(ValueError("dims {'a': 1}")) == "dims {'a': 1}"  # nor is a dict


def llama_names(model):
    return ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_targets_wrong_on_the_shown_architectures_are_named_with_the_first_ones_names(targets, verdict):
    """Llama's names are right on Llama and match nothing on BERT and GPT-2: the verdict names BERT's
    projections and lists GPT-2 as also wrong."""
    found = verdict(targets.attention_targets_shown, {"attention_targets": llama_names})
    assert found.startswith(
        "[Mistake 1: Wrong target_modules for model architecture] On the architectures this lab"
    )
    assert "on BERT (bert) target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj'] match nothing" in found
    assert "Also wrong on: GPT-2." in found and "Llama" not in found.split("Fix:")[0]
    assert "Fix: BERT's attention projections are query, key, value" in found


@pytest.mark.parametrize("check", ["attention_targets_shown", "attention_targets_unseen"])
def test_attention_targets_must_be_a_function(targets, verdict, check):
    found = verdict(getattr(targets, check), {"attention_targets": ["q_proj", "v_proj"]})
    assert "[Mistake 1: " in found and "`attention_targets` is not a function" in found
    assert "Fix: def attention_targets(model)" in found


@pytest.mark.parametrize(
    ("model_type", "base_type"),
    [("llama", "LlamaForCausalLM"), ("bert", "BertModel"), ("roberta", "RobertaForSequenceClassification")],
    ids=["causal LM", "BERT without a head", "RoBERTa classifier"],
)
def test_lora_model_must_wrap_the_bert_classifier(hidden_check, model_type, base_type):
    judges = hidden_check("lab02_target_modules.judges")
    record = {"model_type": model_type, "base_type": base_type, "modules": {}}
    with pytest.raises(
        AssertionError, match=rf"\[Mistake 1: .*\] lora_model wraps a {base_type}, not the course's"
    ):
        judges.bert_lora_model(record)
