"""Lab 09's checks (grader/checks/lab09_chat_sft/): the judges on hand-made records, and the records
made from a real tokenizer and a real SFTTrainer's batches (the graded catalogue proves them end to end)."""

from __future__ import annotations

import re

import pytest


@pytest.fixture
def judges(hidden_check):
    return hidden_check("lab09_chat_sft.judges")


MARKERS = {"<|user|>": {"pieces": 1, "special": True}, "<|assistant|>": {"pieces": 1, "special": True}}
TOKENS = {"markers": MARKERS, "pad_id": 0, "eos_id": 2, "eos_token": "</s>", "marker_ids": [7, 8],
          "new_token_ids": [7, 8], "new_ids_match": True}  # fmt: skip
TEMPLATE = {"error": "", "turns": 2, "markers_used": {"<|user|>": True, "<|assistant|>": True}, "masked": 6,
            "prompt_masked_in": [], "replies_in_mask": 2, "eos_in_mask": 2, "eos_rendered": 2,
            "generation_prompt": "<|assistant|>\n", "generation_prompt_prefix": True}  # fmt: skip
LORA = {"modules_to_save": [], "whole_modules": [], "token_rows": [7, 8], "new_ids": [7, 8],
        "lora_leaves": ["k_proj", "o_proj", "q_proj", "v_proj"], "share": 0.003,
        "config": {"r": 16, "lora_alpha": 32, "rank_pattern": {}, "alpha_pattern": {}, "task_type": "CAUSAL_LM"}}  # fmt: skip
LABELS = {
    "examples": 8,
    "no_marker": 0,
    "prompt_labelled": 0,
    "eos_missing": 0,
    "eos_kept": 8,
    "reply_labelled": 8,
}


@pytest.mark.parametrize(
    ("judge", "good", "change", "words"),
    [
        ("chat_tokens", TOKENS, {"pad_id": 2}, "the pad token is the EOS"),
        ("chat_tokens", TOKENS, {"pad_id": None}, "no pad token"),
        (
            "chat_tokens",
            TOKENS,
            {"markers": MARKERS | {"<|user|>": {"pieces": 7, "special": False}}},
            "7 tokens",
        ),
        ("chat_tokens", TOKENS, {"new_ids_match": False}, "new_token_ids is"),
        ("chat_template_mask", TEMPLATE, {"error": "TemplateSyntaxError: x"}, "does not render"),
        ("chat_template_mask", TEMPLATE, {"masked": 0}, "no {% generation %} block"),
        ("chat_template_mask", TEMPLATE, {"eos_in_mask": 0}, "outside the generation block"),
        ("chat_template_mask", TEMPLATE, {"eos_in_mask": 0, "eos_rendered": 0}, "not in the template"),
        ("chat_template_mask", TEMPLATE, {"prompt_masked_in": ["Name"]}, "words of the prompt"),
        ("chat_template_mask", TEMPLATE, {"generation_prompt_prefix": False}, "add_generation_prompt"),
        (
            "chat_lora",
            LORA,
            {"whole_modules": ["base_model.model.model.embed_tokens"], "share": 0.48},
            "48.0%",
        ),
        ("chat_lora", LORA, {"token_rows": []}, "not trainable"),
        ("chat_lora", LORA, {"lora_leaves": ["q_proj", "v_proj"]}, "Mistake 1"),
        ("sft_labels", LABELS, {"prompt_labelled": 8}, "prompt tokens carry labels"),
        ("sft_labels", LABELS, {"eos_kept": 0}, "labelled -100"),
        ("sft_labels", LABELS, {"eos_missing": 8}, "no EOS after the reply"),
        ("sft_labels", LABELS, {"no_marker": 8}, "not rendered with the chat template"),
        (
            "chat_template_mask",
            TEMPLATE,
            {"markers_used": {"<|user|>": True, "<|assistant|>": False}},
            "does not contain ['<|assistant|>'] as tokens",
        ),
        ("chat_template_mask", TEMPLATE, {"replies_in_mask": 1}, "only 1 of the 2 replies are inside"),
        ("chat_lora", LORA, {"share": 0.0213}, "2.13% of the model trains"),
        ("chat_lora", LORA, {"config": LORA["config"] | {"r": 128}}, "Mistake 2"),
        (
            "chat_lora",
            LORA,
            {"config": LORA["config"] | {"rank_pattern": {"q_proj": 64}}},
            "[16, 64] (rank_pattern)",
        ),
        ("chat_lora", LORA, {"config": LORA["config"] | {"task_type": None}}, "task_type=None"),
        (
            "sft_labels",
            LABELS,
            {"examples": 0, "eos_kept": 0, "reply_labelled": 0},
            "the trainer's training set is empty",
        ),
        ("sft_labels", LABELS, {"reply_labelled": 5}, "only 5 of 8 sequences have their reply labelled"),
    ],
)
def test_each_judge_names_each_mistake(judges, judge, good, change, words):
    getattr(judges, judge)(good)
    with pytest.raises(AssertionError, match=re.escape(words)):
        getattr(judges, judge)(good | change)


def test_stops_judge_wants_most_answers_to_end(judges):
    record = {
        "prompts": 10,
        "stopped": 10,
        "example": "",
        "max_new_tokens": 16,
        "replies": 40,
        "eos_after_reply": 40,
    }
    judges.chat_stops(record)
    with pytest.raises(AssertionError, match="ran to the 16-token limit on 10 of 10"):
        judges.chat_stops(record | {"stopped": 0, "example": "three cup cup", "eos_after_reply": 0})


def test_adapter_files_judge_names_whole_layers_and_a_missing_tokenizer(judges):
    good = {"whole_tensors": [], "adapter_mb": 0.2, "tokenizer_saved": True, "template_saved": True}
    judges.chat_adapter_files(good)
    with pytest.raises(AssertionError, match="save_embedding_layers=False"):
        judges.chat_adapter_files(
            good | {"whole_tensors": ["base_model.model.lm_head.weight"], "adapter_mb": 62}
        )
    with pytest.raises(AssertionError, match="no tokenizer"):
        judges.chat_adapter_files(good | {"tokenizer_saved": False})
    with pytest.raises(AssertionError, match="no chat template"):
        judges.chat_adapter_files(good | {"template_saved": False})


TEMPLATE_GOOD = (
    "{% for message in messages %}{% if message['role'] == 'user' %}<|user|>\n{{ message['content'] }}\n"
    "{% else %}<|assistant|>\n{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _chat_tokenizer():
    from transformers import AutoTokenizer

    from labutils.models import ensure_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(str(ensure_tiny_model("causal_lm")))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>"]})
    tokenizer.chat_template = TEMPLATE_GOOD
    return tokenizer


def test_records_read_the_real_tokenizer_and_template(hidden_check):
    """The template's assistant mask as transformers computes it: EOS inside the block, or outside it."""
    chat = hidden_check("lab09_chat_sft.kernel")
    tokenizer = _chat_tokenizer()
    ns = {
        "tokenizer": tokenizer,
        "new_token_ids": tokenizer.convert_tokens_to_ids(["<|user|>", "<|assistant|>"]),
    }
    chat.tokens_added(ns)
    chat.template_masks(ns)
    tokenizer.chat_template = TEMPLATE_GOOD.replace(
        "{{ eos_token }}{% endgeneration %}", "{% endgeneration %}{{ eos_token }}"
    )
    with pytest.raises(AssertionError, match="outside the generation block"):
        chat.template_masks(ns)
    tokenizer.pad_token = tokenizer.eos_token
    with pytest.raises(AssertionError, match="pad token is the EOS"):
        chat.tokens_added(ns)


@pytest.mark.training
def test_labels_are_read_from_the_trainers_own_batches(hidden_check, tmp_path):
    """A real SFTTrainer (not trained): assistant-only loss masks the prompt and keeps the EOS; without it the
    prompt carries labels."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from labutils.models import ensure_tiny_model

    chat = hidden_check("lab09_chat_sft.kernel")
    tokenizer = _chat_tokenizer()
    rows = [{"messages": [{"role": "user", "content": f"What is {i} plus 1?"},
                          {"role": "assistant", "content": str(i + 1)}]} for i in range(8)]  # fmt: skip

    def trainer(**loss):
        model = AutoModelForCausalLM.from_pretrained(str(ensure_tiny_model("causal_lm")), dtype=torch.float32)
        args = SFTConfig(output_dir=str(tmp_path), max_length=64, bf16=False, report_to="none", **loss)
        lora = LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM")
        return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=lora)  # fmt: skip

    chat.labels_masked({"trainer": trainer(assistant_only_loss=True), "tokenizer": tokenizer})
    with pytest.raises(AssertionError, match="prompt tokens carry labels"):
        chat.labels_masked({"trainer": trainer(), "tokenizer": tokenizer})


def test_a_trainer_without_a_training_set_is_named(hidden_check, tmp_path, verdict):
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from labutils.models import ensure_tiny_model

    chat = hidden_check("lab09_chat_sft.kernel")
    model = AutoModelForCausalLM.from_pretrained(str(ensure_tiny_model("causal_lm")), dtype=torch.float32)
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none"))
    found = verdict(chat.labels_masked, {"trainer": trainer, "tokenizer": _chat_tokenizer()})
    assert found.startswith("[SFT labels: ") and "the trainer has no training set" in found
    assert "Fix: SFTTrainer(..., train_dataset=train_chat)" in found


@pytest.mark.parametrize(
    ("tokenizer_saved", "words"),
    [
        (False, r"cannot render a chat \(\w+(Error|Exception): "),
        (True, r"cannot render a chat \(ValueError: it has no chat template\)"),
    ],
    ids=["no tokenizer", "no chat template"],
)
def test_generation_needs_the_chat_tokenizer_saved_beside_the_adapter(
    hidden_check, tmp_path, verdict, tokenizer_saved, words
):
    from peft import LoraConfig
    from transformers import AutoTokenizer

    from labutils.models import ensure_tiny_model

    files = hidden_check("lab09_chat_sft.files")
    adapter_dir = tmp_path / "adapter"
    LoraConfig(r=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]).save_pretrained(adapter_dir)
    if tokenizer_saved:
        tokenizer = AutoTokenizer.from_pretrained(str(ensure_tiny_model("causal_lm")))
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>"]})
        tokenizer.save_pretrained(adapter_dir)  # the lab's tokenizer, saved before its chat template was set
    found = verdict(files.generation_stops, {"ADAPTER_DIR": adapter_dir})
    rule = "[Chat tokens: the role markers as special tokens, and a pad token that is not EOS]"
    assert found.startswith(f"{rule} the tokenizer saved in {adapter_dir} ")
    assert re.search(words, found)
    assert "Fix: tokenizer.save_pretrained(ADAPTER_DIR) after setting its chat template." in found
