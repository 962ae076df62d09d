"""4-bit storage against the QLoRA paper's floor of 4 + 8/64 + 32/(64*256) = 4.127 bits per weight."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from labutils.inspection import NF4_DOUBLE_QUANT_FLOOR_BITS, quantized_storage
from labutils.models import ensure_tiny_model


def _storage(double_quant: bool):
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = AutoModelForCausalLM.from_pretrained(ensure_tiny_model("causal_lm"), quantization_config=config)
    return quantized_storage(model)


def test_nf4_double_quant_layers_stay_within_3_percent_of_the_floor():
    storage = _storage(double_quant=True)
    assert storage.bits_per_weight == pytest.approx(NF4_DOUBLE_QUANT_FLOOR_BITS, rel=1e-3)
    assert storage.bits_per_weight_with_tables / NF4_DOUBLE_QUANT_FLOOR_BITS < 1.03  # code tables included


def test_without_double_quant_the_scales_cost_half_a_bit_more():
    """The measure can fail: 32-bit absmax per block of 64 is 4.5 bits per weight, 9% over the floor."""
    storage = _storage(double_quant=False)
    assert storage.bits_per_weight == pytest.approx(4.5, rel=1e-3)
    assert storage.bits_per_weight / NF4_DOUBLE_QUANT_FLOOR_BITS > 1.03
