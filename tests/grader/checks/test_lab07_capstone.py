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


# ---- the saved adapter, reloaded and evaluated on the course's tiny Llama (no training) ---------------
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM"}


@pytest.fixture(scope="module")
def tiny():
    from labutils.models import ensure_tiny_model

    return str(ensure_tiny_model("causal_lm"))


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
    """Lab 07's file checks on a CPU, the validation loss over the first 4 rows of the split (the rule is the same)."""
    on(CPU)
    files = hidden_check("lab07_capstone.files")
    every_row = files._validation_texts
    monkeypatch.setattr(files, "_validation_texts", lambda tokenizer: every_row(tokenizer)[:4])
    return files


def test_an_untrained_adapter_does_not_lower_the_validation_loss(files, tiny, tmp_path, verdict):
    adapter(tiny, trained=False).save_pretrained(tmp_path / "adapter")
    message = verdict(files.validation_improved, {"ADAPTER_DIR": tmp_path / "adapter"})
    assert message.startswith(f"[{files.VALIDATION}]")
    assert "(0.0% lower); a trained adapter should cut it by at least 10%" in message
    before, after = message.split("takes the loss from ", 1)[1].split(" (", 1)[0].split(" to ")
    assert before == after  # disable_adapter is the untrained reference: B = 0 changes nothing


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
