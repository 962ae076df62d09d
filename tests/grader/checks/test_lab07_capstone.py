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
