"""Lab 00's hidden checks (grader/checks/lab00_setup/) and labutils.machines: plain functions, no notebook."""

from __future__ import annotations

import pytest
import torch

from labutils import doctor
from labutils.machines import MACHINES, dtype_of, simulated, try_on_machines


@pytest.fixture
def setup(hidden_check):
    return hidden_check("lab00_setup.kernel")


def native(*_args):
    if not torch.cuda.is_available():
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def by_capability():
    if torch.cuda.is_available() and torch.cuda.get_device_capability() < (8, 0):
        return "float16"
    return "torch.bfloat16"


def emulation_trap():
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def always_bf16():
    return torch.bfloat16


def no_cuda_check():
    return torch.bfloat16 if torch.cuda.get_device_capability()[0] >= 8 else torch.float16


def test_simulated_machines_answer_like_real_ones():
    real = torch.cuda.is_available
    with simulated(MACHINES["colab_t4"]):
        assert torch.cuda.is_available() and torch.cuda.get_device_name(0) == "Tesla T4"
        assert torch.cuda.get_device_capability() == (7, 5)
        assert torch.cuda.is_bf16_supported() is True  # emulated: torch >= 2.3 says True on a T4
        assert torch.cuda.is_bf16_supported(including_emulation=False) is False
        assert doctor.detect_hardware()["compute_dtype"] == torch.float16
    with simulated(MACHINES["h100"]):
        assert doctor.detect_hardware()["compute_dtype"] == torch.bfloat16
    with simulated(MACHINES["cpu"]):
        assert not torch.cuda.is_available() and torch.cuda.device_count() == 0
        with pytest.raises(RuntimeError):
            torch.cuda.get_device_capability()
    assert torch.cuda.is_available is real


def test_names_imported_from_torch_cuda_are_simulated_and_restored():
    from torch.cuda import is_available

    ns = {"is_available": is_available, "other": 1}
    rows = try_on_machines(lambda: "float16" if ns["is_available"]() else "bfloat16", namespace=ns)
    assert [r["answer"] for r in rows if r["machine"].cuda] == ["float16"] * 5
    assert ns == {"is_available": is_available, "other": 1}


@pytest.mark.parametrize("chooser", [native, by_capability])
def test_correct_choosers_pass(setup, chooser):
    ns = {"choose_compute_dtype": chooser}
    setup.compute_dtype_on_gpus(ns)
    setup.compute_dtype_on_cpu(ns)


@pytest.mark.parametrize(
    ("chooser", "gpus", "cpu", "says"),
    [
        (
            emulation_trap,
            False,
            True,
            "returned bfloat16 on a Colab T4 (Tesla T4; capability 7.5: no native bf16), where it should be float16",
        ),
        (always_bf16, False, True, "V100"),
        (no_cuda_check, True, False, "raised an error"),
    ],
)
def test_wrong_choosers_fail_naming_the_machine(setup, chooser, gpus, cpu, says):
    ns = {"choose_compute_dtype": chooser}
    for check, passes in ((setup.compute_dtype_on_gpus, gpus), (setup.compute_dtype_on_cpu, cpu)):
        if passes:
            check(ns)
            continue
        with pytest.raises(AssertionError) as err:
            check(ns)
        assert "QLoRA pattern" in str(err.value) and "Fix:" in str(err.value)
        assert says in str(err.value)


def test_a_rule_that_lists_the_labs_gpus_by_name_fails_on_a_card_it_never_named(setup):
    """Found by red-teaming: fp16 for names holding "T4" or "V100" passed on the lab's five machines."""
    import torch

    def by_names():
        if torch.cuda.is_available() and any(old in torch.cuda.get_device_name(0) for old in ("T4", "V100")):
            return torch.float16
        return torch.bfloat16

    with pytest.raises(AssertionError) as err:
        setup.compute_dtype_on_gpus({"choose_compute_dtype": by_names})
    assert "returned bfloat16 on a Quadro RTX 6000 (Quadro RTX 6000; capability 7.5" in str(err.value)
    assert "Also wrong on: a Tesla P100." in str(err.value)


def test_missing_or_not_callable(setup):
    with pytest.raises(AssertionError, match="not defined"):
        setup.compute_dtype_on_gpus({})
    with pytest.raises(AssertionError, match="not a function"):
        setup.compute_dtype_on_cpu({"choose_compute_dtype": torch.bfloat16})


def test_bnb_config_here(setup):
    from transformers import BitsAndBytesConfig

    here = doctor.detect_hardware()["compute_dtype"]
    good = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=str(here).removeprefix("torch."),
    )
    setup.bnb_config_here({"bnb_config": good})
    wrong = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    with pytest.raises(AssertionError, match="float32"):
        setup.bnb_config_here({"bnb_config": wrong})


def test_dtype_of_accepts_names():
    assert dtype_of("torch.float16") == dtype_of("float16") == dtype_of(torch.float16) == torch.float16
    assert dtype_of("bf16") is None and dtype_of(None) is None
