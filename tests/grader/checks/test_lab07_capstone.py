"""Lab 07's own hidden checks (grader/checks/lab07_capstone/) on simulated hardware: no model, no training."""

from __future__ import annotations

import pytest

from peft_grader import scores

CPU = {"cuda_available": False, "bf16_supported": True, "device_name": "CPU (no CUDA)"}
T4 = {"cuda_available": True, "bf16_supported": False, "device_name": "Tesla T4"}
A100 = {"cuda_available": True, "bf16_supported": True, "device_name": "NVIDIA A100"}


@pytest.fixture
def capstone(hidden_check):
    return hidden_check("lab07_capstone.kernel")


def args(**flags):
    from transformers import TrainingArguments

    return TrainingArguments(output_dir="unused", report_to="none", use_cpu=True, **flags)


@pytest.mark.parametrize(
    ("hardware", "want"),
    [(CPU, (False, False)), (T4, (True, False)), (A100, (False, True))],
    ids=["cpu", "t4", "a100"],
)
def test_expected_precision_follows_the_hardware(hidden_check, on, hardware, want):
    on(hardware)
    assert tuple(hidden_check("hardware").expected_precision().values()) == want


@pytest.mark.parametrize(
    ("hardware", "right", "wrong"),
    [
        (CPU, {}, [{"fp16": True}, {"bf16": True}]),
        (T4, {"fp16": True}, [{}, {"bf16": True}]),
        (A100, {"bf16": True}, [{}, {"fp16": True}]),
    ],
    ids=["cpu", "t4", "a100"],
)
def test_precision_flags_accept_exactly_the_right_choice(
    capstone, hidden_check, on, hardware, right, wrong, verdict
):
    on(hardware)
    rule = hidden_check("hardware").PRECISION
    assert verdict(capstone.precision_flags, {"training_args": args(**right)}) == ""
    for flags in wrong:
        message = verdict(capstone.precision_flags, {"training_args": args(**flags)})
        assert message.startswith(f"[{rule}]") and "Fix:" in message, flags
        assert len("PeftMistake: " + message) <= scores.MESSAGE_CHARS


def test_precision_reads_the_trainers_own_arguments(capstone, on, verdict):
    """What trained is trainer.args; a correct `training_args` built afterwards does not hide it."""

    class FakeTrainer:
        pass

    on(CPU)
    from transformers import Trainer

    trainer = Trainer.__new__(Trainer)
    trainer.args = args(fp16=True)
    assert "fp16=True" in verdict(capstone.precision_flags, {"trainer": trainer, "training_args": args()})
    # Anything else called `trainer` is ignored in favour of training_args.
    assert verdict(capstone.precision_flags, {"trainer": FakeTrainer(), "training_args": args()}) == ""


def test_missing_objects_are_named(capstone, on, tmp_path, verdict):
    on(CPU)
    assert "`training_args` is not defined" in verdict(capstone.precision_flags, {})
    ns = {"ADAPTER_DIR": tmp_path / "adapter"}
    assert "no adapter_config.json" in verdict(capstone.validation_improved, ns)
    assert "`inference_model` is not defined" in verdict(capstone.reloaded_for_inference, ns)


# ---- the saved adapter, reloaded and evaluated on the capstone's model, the world's base (no training) ----------
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM"}


@pytest.fixture(scope="module")
def tiny():
    from labutils.models import ensure_tiny_model

    return str(ensure_tiny_model("world_lm"))


def fresh_base(tiny):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny)


def adapter(tiny, trained=True):
    """get_peft_model on a fresh base; `trained`: its lora_B non-zero, as after training (LoRA starts at B = 0)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(fresh_base(tiny), LoraConfig(**LORA, init_lora_weights=not trained))


@pytest.fixture
def saved(tiny, tmp_path):
    """The capstone's trained `model` and the ADAPTER_DIR it saved itself to."""
    model = adapter(tiny)
    model.save_pretrained(tmp_path / "adapter")
    return model, tmp_path / "adapter"


def test_reload_accepts_the_saved_adapter_on_a_fresh_base(capstone, tiny, saved, verdict):
    from peft import PeftModel

    model, folder = saved
    inference = PeftModel.from_pretrained(fresh_base(tiny), folder)
    assert (
        verdict(
            capstone.reloaded_for_inference,
            {"ADAPTER_DIR": folder, "model": model, "inference_model": inference},
        )
        == ""
    )


def reloads(tiny, model, folder):
    """Ways of making `inference_model` that are not the saved adapter on a fresh base."""
    from peft import PeftModel

    return {
        "merged": PeftModel.from_pretrained(fresh_base(tiny), folder).merge_and_unload(),
        "the_trained_model": model,
        "onto_the_trained_base": PeftModel.from_pretrained(model.get_base_model(), folder),
        "new_adapter": adapter(tiny, trained=False),
    }


@pytest.mark.parametrize(
    ("way", "words"),
    [
        ("merged", "`inference_model` is a plain LlamaForCausalLM, not a PeftModel: the adapter was merged"),
        ("the_trained_model", "`inference_model` is the model you trained, not a reload"),
        ("onto_the_trained_base", "loaded onto the training model itself (its weights are shared with `model`, e.g. base_model.model.model."),
        ("new_adapter", "the adapter inside `inference_model` is not the one saved in {folder} (a new, untrained adapter"),
    ],
    ids=["merged", "the_trained_model", "onto_the_trained_base", "new_adapter"],
)  # fmt: skip
def test_reload_names_each_inference_model_that_is_not_the_saved_adapter(
    capstone, tiny, saved, verdict, way, words
):
    model, folder = saved
    inference = reloads(tiny, model, folder)[way]
    message = verdict(
        capstone.reloaded_for_inference, {"ADAPTER_DIR": folder, "model": model, "inference_model": inference}
    )
    assert message.startswith(f"[{capstone.RELOAD}]") and words.format(folder=folder) in message


def test_reload_needs_the_saved_weights(capstone, tiny, saved, tmp_path, verdict):
    from peft import PeftModel

    _, folder = saved
    inference = PeftModel.from_pretrained(fresh_base(tiny), folder)
    (folder / "adapter_model.safetensors").unlink()
    message = verdict(capstone.reloaded_for_inference, {"ADAPTER_DIR": folder, "inference_model": inference})
    assert (
        message.startswith(f"[{capstone.RELOAD}]")
        and f"{folder} holds no adapter_model.safetensors to load." in message
    )


@pytest.fixture
def files(hidden_check, on, monkeypatch):
    """Lab 07's file checks on a CPU, over the first 8 rows of the validation split (the rule is the same)."""
    on(CPU)
    files = hidden_check("lab07_capstone.files")
    every_row = files._validation_rows
    monkeypatch.setattr(files, "_validation_rows", lambda: every_row()[:8])
    return files


def test_an_untrained_adapter_does_not_lower_the_validation_loss(files, tiny, tmp_path, verdict):
    adapter(tiny, trained=False).save_pretrained(tmp_path / "adapter")
    message = verdict(files.validation_improved, {"ADAPTER_DIR": tmp_path / "adapter"})
    assert message.startswith(f"[{files.VALIDATION}]")
    assert "(0.0% lower); a trained adapter should cut it by at least 25%" in message
    before, after = message.split("takes the loss on the answers from ", 1)[1].split(" (", 1)[0].split(" to ")
    assert before == after  # disable_adapter is the untrained reference: B = 0 changes nothing


def test_an_untrained_adapter_answers_nothing(files, tiny, tmp_path, verdict):
    """The base writes biographies, not answers: an adapter with B = 0 answers none of the questions exactly."""
    adapter(tiny, trained=False).save_pretrained(tmp_path / "adapter")
    message = verdict(files.answers_improved, {"ADAPTER_DIR": tmp_path / "adapter"})
    assert message.startswith(f"[{files.ANSWERS}]")
    assert "answers 0.0% of the 8 validation questions exactly (the base alone: 0.0%)" in message
    assert "at least 30%" in message and "Fix: " in message


@pytest.mark.parametrize(
    ("right", "words"), [(3, ""), (2, "answers 25.0% of the 8")], ids=["enough", "fewer"]
)
def test_answers_are_judged_on_a_share_answered_exactly(
    files, tiny, tmp_path, verdict, monkeypatch, right, words
):
    """The threshold itself: answers stood in for the model's (the real reference is graded in the catalogue)."""
    import labutils.world

    adapter(tiny, trained=False).save_pretrained(tmp_path / "adapter")
    rows = files._validation_rows()
    stand_in = [row["response"] for row in rows[:right]] + [None] * (len(rows) - right)
    monkeypatch.setattr(labutils.world, "greedy_answers", lambda model, tokenizer, rows: stand_in)
    message = verdict(files.answers_improved, {"ADAPTER_DIR": tmp_path / "adapter"})
    assert (words in message) if words else message == "", message


def test_on_the_hub_profile_answers_are_not_judged(files, tiny, tmp_path, verdict, monkeypatch):
    """A hub model never read the world: its adapter learns the answers' form, not the facts, so only the load is
    checked there (a missing adapter still fails)."""
    monkeypatch.setenv("PEFT_COURSE_PROFILE", "hub")
    monkeypatch.setattr("labutils.course_model", lambda role: tiny)  # the hub id, rehearsed offline
    adapter(tiny, trained=False).save_pretrained(tmp_path / "adapter")
    assert verdict(files.answers_improved, {"ADAPTER_DIR": tmp_path / "adapter"}) == ""
    assert "no adapter_config.json" in verdict(files.answers_improved, {"ADAPTER_DIR": tmp_path / "none"})


def test_a_foreign_adapter_does_not_load_onto_the_course_model(files, tmp_path, verdict):
    """A BERT adapter's config (query/value) in ADAPTER_DIR: PeftModel.from_pretrained raises, the check names it."""
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(
        '{"peft_type": "LORA", "task_type": "SEQ_CLS", "r": 8, "lora_alpha": 16, "target_modules": ["query", "value"]}'
    )
    message = verdict(files.validation_improved, {"ADAPTER_DIR": folder})
    assert (
        message.startswith(f"[{files.VALIDATION}]")
        and f"the adapter in {folder} does not load onto the course model (" in message
        and "query" in message  # peft's own error: the BERT names are not found in the Llama
    )


# ---- a pad token of its own: the EOS labelled in the batches the Trainer's collator builds -------------------
EOS, PAD = 2, 1043  # the tiny Llama's </s>, and the <|pad|> exercise 1 adds after its 1043 tokens
# Two texts ending with the EOS, the shorter one padded: what DataCollatorForLanguageModeling builds.
BATCH = {
    "input_ids": [[1, 262, 79, 622, EOS], [1, 661, EOS, PAD, PAD]],
    "attention_mask": [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]],
    "labels": [[1, 262, 79, 622, EOS], [1, 661, EOS, -100, -100]],
    "eos_id": EOS,
    "pad_id": PAD,
}
# The same texts with pad = EOS: the collator labels every pad-id token -100, and so every EOS.
PAD_IS_EOS = BATCH | {
    "input_ids": [[1, 262, 79, 622, EOS], [1, 661, EOS, EOS, EOS]],
    "labels": [[1, 262, 79, 622, -100], [1, 661, -100, -100, -100]],
    "pad_id": EOS,
}


@pytest.fixture
def capstone_judges(hidden_check):
    return hidden_check("lab07_capstone.judges")


def test_eos_labelled_accepts_a_batch_whose_eos_keeps_its_label(capstone_judges, verdict):
    assert verdict(capstone_judges.eos_labelled, BATCH) == ""
    # without an attention mask every position counts as real: the EOS is still labelled
    assert (
        verdict(capstone_judges.eos_labelled, {k: v for k, v in BATCH.items() if k != "attention_mask"}) == ""
    )


def test_eos_labelled_names_pad_equal_to_eos_and_the_fix(capstone_judges, verdict):
    message = verdict(capstone_judges.eos_labelled, PAD_IS_EOS)
    assert message.startswith(f"[{capstone_judges.PAD_RULE}]")
    assert (
        "the EOS that ends the text is labelled -100 in 2 of 2 sequences: the pad token is the EOS (id 2)"
        in message
    )
    assert "DataCollatorForLanguageModeling sets the label of every pad-id token to -100" in message
    assert "the model never learns to stop" in message
    assert (
        "Fix: if tokenizer.pad_token is None or is the EOS, tokenizer.add_special_tokens({'pad_token': '<|pad|>'})"
        in message
    )
    assert len("PeftMistake: " + message) <= scores.MESSAGE_CHARS


def test_eos_labelled_fails_an_eos_masked_some_other_way(capstone_judges, verdict):
    """A pad token of its own, but the EOS masked all the same (one of two sequences): still no stopping learned."""
    masked = BATCH | {"labels": [[1, 262, 79, 622, EOS], [1, 661, -100, -100, -100]]}
    message = verdict(capstone_judges.eos_labelled, masked)
    assert message.startswith(f"[{capstone_judges.PAD_RULE}]")
    assert "labelled -100 in 1 of 2 sequences: the collator masks it (pad id 1043, EOS id 2)" in message


def test_eos_labelled_fails_a_batch_without_an_eos(capstone_judges, verdict):
    """Nothing to stop at is not a pass: padding at the EOS's id hidden by the attention mask does not count."""
    no_eos = BATCH | {"input_ids": [[1, 262, 79, 622, 5], [1, 661, 5, EOS, EOS]], "pad_id": EOS}
    message = verdict(capstone_judges.eos_labelled, no_eos)
    assert message.startswith(f"[{capstone_judges.PAD_RULE}]")
    assert "none of the 2 sequences of a training batch holds the EOS (id 2)" in message


def _tokenized(tokenizer):
    """The capstone's data cell on four course examples: formatted with the EOS, tokenized."""
    from datasets import Dataset

    from labutils.data import format_instruction, load_instructions

    texts = [format_instruction(row, tokenizer.eos_token) for row in list(load_instructions()["train"])[:4]]
    return Dataset.from_dict({"text": texts}).map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=64),
        batched=True,
        remove_columns=["text"],
    )


# (what the tokenizer ships, how exercise 1 handles it, the words of the verdict: "" passes). No pad token is the
# hub's Llama; "pad = EOS" the common recipe; "if None" handles a missing pad token only; "<|pad|>" the lab's answer;
# the tiny tokenizer's own pad token is not the EOS.
PAD_CASES = {
    "no_pad-pad_is_eos": (None, "pad = EOS", "the pad token is the EOS (id 2)"),
    "no_pad-new_pad": (None, "<|pad|>", ""),
    "ships_eos-only_none_handled": ("eos", "if None", "the pad token is the EOS (id 2)"),
    "ships_eos-new_pad": ("eos", "<|pad|>", ""),
    "own_pad": ("own", "<|pad|>", ""),
}


@pytest.mark.parametrize(("ships", "handles", "words"), PAD_CASES.values(), ids=PAD_CASES)
def test_eos_labelled_reads_the_trainers_own_batches(
    capstone, tiny, tmp_path, verdict, ships, handles, words
):
    """A real Trainer (not trained) with the capstone's collator, on tokenizers that ship no pad token or pad == EOS:
    the check collates the Trainer's own training set exactly as the locked cell show_labels does."""
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    if ships != "own":
        tokenizer.pad_token = None if ships is None else tokenizer.eos_token
    if handles == "pad = EOS" and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    elif handles == "if None" and tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    elif handles == "<|pad|>" and tokenizer.pad_token in (None, tokenizer.eos_token):
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    trainer = Trainer(
        model=fresh_base(tiny),
        args=TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True),
        train_dataset=_tokenized(tokenizer),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )
    message = verdict(capstone.eos_labelled, {"trainer": trainer, "tokenizer": tokenizer})
    assert (words in message) if words else message == "", message
    if words:
        assert "labelled -100 in 4 of 4 sequences" in message and "Fix: " in message
    record = capstone.batch_record(trainer, tokenizer)
    assert record["pad_id"] != record["eos_id"] if not words else record["pad_id"] == record["eos_id"]


def test_eos_labelled_names_a_missing_trainer(capstone, verdict):
    assert "`trainer` is not defined" in verdict(capstone.eos_labelled, {})


def test_outside_the_eos_is_judged_on_the_batch_the_locked_cell_recorded(hidden_check):
    """A test cell that saw a batch with the EOS labelled still fails when the batch the locked cell show_labels
    collated from the Trainer just before training (what it trained on) masked every EOS."""
    evidence, runner = hidden_check("evidence"), hidden_check("outside")
    from checks import PeftMistake

    def judge(recorded: dict) -> None:
        output = {
            "output_type": "display_data",
            "data": {evidence.MIME: {"check": "eos_labelled", "record": BATCH}},
        }
        cells = {
            "test_eos_labelled": {"outputs": [output]},
            "show_labels": {"metadata": {evidence.RECORDED_KEY: {"batch": recorded}}},
        }
        runner._judge_record("07_capstone", "judges.eos_labelled", cells, "test_eos_labelled")

    judge(BATCH)  # the same batch: it passes
    with pytest.raises(
        PeftMistake, match=r"the pad token is the EOS .*judged on what the notebook's cell show_labels"
    ):
        judge(PAD_IS_EOS)


def test_reload_of_a_4bit_adapter_needs_a_4bit_base(capstone, tiny, tmp_path, verdict):
    """An adapter trained on the 4-bit base, put on a base loaded without quantization_config: named; on a fresh
    4-bit base: accepted."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    def four_bit():
        nf4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
        return AutoModelForCausalLM.from_pretrained(tiny, quantization_config=nf4)

    model = get_peft_model(four_bit(), LoraConfig(**LORA, init_lora_weights=False))
    model.save_pretrained(tmp_path / "adapter")
    ns = {"ADAPTER_DIR": tmp_path / "adapter", "model": model}
    on_4bit = PeftModel.from_pretrained(four_bit(), tmp_path / "adapter")
    assert verdict(capstone.reloaded_for_inference, ns | {"inference_model": on_4bit}) == ""
    full = PeftModel.from_pretrained(fresh_base(tiny), tmp_path / "adapter")
    message = verdict(capstone.reloaded_for_inference, ns | {"inference_model": full})
    assert message.startswith(f"[{capstone.RELOAD}]") and "loaded without quantization_config" in message
    # Found by red-teaming: a stray 4-bit layer added beside the full-precision base passed as "a 4-bit base".
    import bitsandbytes as bnb

    full.base_model.model.add_module("quantized_probe", bnb.nn.Linear4bit(8, 8))
    message = verdict(capstone.reloaded_for_inference, ns | {"inference_model": full})
    assert "loaded without quantization_config" in message


# ---- the saved adapter's provenance: what the locked cells recorded while the notebook was graded -------------
def training_rows(tiny, split, spell=lambda text: text):
    """The lab's tokenized rows of a split (prompt, answer, EOS), as the Trainer's training set holds them;
    `spell` rewrites each question first."""
    from transformers import AutoTokenizer

    from labutils.data import format_prompt, load_world_questions

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    return [
        tokenizer(format_prompt(spell(r["instruction"])))["input_ids"]
        + tokenizer(r["response"], add_special_tokens=False)["input_ids"]
        + [tokenizer.eos_token_id]
        for r in load_world_questions()[split]
    ]


@pytest.fixture
def graded(files, hidden_check, tiny, saved, monkeypatch):
    """records(**changes) -> what a graded honest run records just before and right after the locked cell
    `train` (an untrained adapter, no step, no optimizer, the training split's rows; the trained adapter and its
    manifest), with `changes` to the cell `train`'s names, as the grader reads them outside the kernel; and the
    saved adapter's folder."""
    evidence = hidden_check("evidence")
    model, folder = saved
    state = evidence.RECORDERS["adapter_state"](model)
    honest = {
        "start": state | {"untrained": True},
        "step": 0,
        "optimizer": None,
        "rows": training_rows(tiny, "train"),
        "end": state,
        "model": evidence.RECORDERS["manifest"](model),
    }

    def records(**changes):
        monkeypatch.setattr(evidence, "notebook_records", {"train": honest | changes})

    return records, folder


def provenance(files, tiny, folder):
    from transformers import AutoTokenizer

    return lambda _: files.trained_by_the_lab(folder, AutoTokenizer.from_pretrained(tiny))


def test_an_honest_graded_run_passes_and_an_ungraded_one_is_not_judged(files, tiny, graded, verdict):
    records, folder = graded
    records()
    assert verdict(provenance(files, tiny, folder), None) == ""
    records(start=None, end=None)  # a learner's own run: nothing recorded
    assert verdict(provenance(files, tiny, folder), None) == ""


@pytest.mark.parametrize("spell", [str, str.lower], ids=["as_written", "names_disguised"])
def test_training_on_validation_questions_is_named(files, tiny, graded, verdict, spell):
    records, folder = graded
    records(rows=training_rows(tiny, "train") + training_rows(tiny, "validation", spell)[:3])
    message = verdict(provenance(files, tiny, folder), None)
    assert message.startswith(f"[{files.HELD_OUT}]")
    assert "name 3 people of the validation split (Loda, Megu, Rimo)" in message
    assert "Fix: train on the training split only" in message


def test_rows_that_are_not_the_training_split_are_named(files, tiny, graded, verdict):
    records, folder = graded
    rows = training_rows(tiny, "train")
    records(rows=rows[5:] + rows[:1])
    message = verdict(provenance(files, tiny, folder), None)
    assert message.startswith(f"[{files.PROVENANCE}]")
    assert (
        f"the Trainer's {len(rows) - 4} training rows are not the lab's training split (0 rows not in it, 4 of its"
        in message
    )


@pytest.mark.parametrize(
    "change",
    [{"step": 3}, {"optimizer": "<AdamW>"}, {"start": "trained"}],
    ids=["stepped", "optimizer", "lora_b"],
)
def test_an_adapter_trained_before_the_trainers_cell_is_named(
    files, tiny, graded, verdict, hidden_check, change
):
    records, folder = graded
    if change.get("start") == "trained":
        change = {"start": hidden_check("evidence").RECORDERS["adapter_state"](adapter(tiny))}
    records(**change)
    message = verdict(provenance(files, tiny, folder), None)
    assert message.startswith(f"[{files.PROVENANCE}]")
    assert "the adapter had already trained when the lab's training cell started" in message


def test_a_saved_adapter_that_is_not_the_trainers_is_named(files, tiny, graded, verdict, hidden_check):
    records, folder = graded
    other = hidden_check("evidence").RECORDERS["adapter_state"](adapter(tiny))  # another trained adapter
    records(end=other)
    message = verdict(provenance(files, tiny, folder), None)
    count = len(other["tensors"])
    assert message.startswith(f"[{files.PROVENANCE}]")
    assert f"is not the one the lab's Trainer ended with: {count} of its {count} tensors differ" in message


def test_a_saved_config_that_is_not_the_trainers_is_named(files, tiny, graded, verdict):
    import json

    records, folder = graded
    records()
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps(config | {"lora_alpha": 128, "use_rslora": True}))
    message = verdict(provenance(files, tiny, folder), None)
    assert message.startswith(f"[{files.PROVENANCE}]")
    assert (
        "is not the config the Trainer trained with (lora_alpha: 8 trained, 128 saved; use_rslora: False trained"
        in message
    )


def test_a_trainer_that_never_finished_a_restart_and_an_unreadable_record(files, tiny, graded, verdict):
    records, folder = graded
    records(end=None)
    assert "did not run to its end" in verdict(provenance(files, tiny, folder), None)
    records(start={"restarted": True})  # a crash lost what training started from: fails closed
    with pytest.raises(LookupError, match="the kernel restarted before the locked cell train ran"):
        provenance(files, tiny, folder)(None)
    records(rows={"unrecorded": "TypeError: the dataset has a format or transform set"})
    with pytest.raises(LookupError, match="recorded no rows"):
        provenance(files, tiny, folder)(None)
