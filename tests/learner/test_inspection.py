"""4-bit storage against the QLoRA paper's floor of 4 + 8/64 + 32/(64*256) = 4.127 bits per weight."""

from __future__ import annotations

import pytest

from labutils.inspection import NF4_DOUBLE_QUANT_FLOOR_BITS, course_lm_in_nf4, quantized_storage


def _storage(double_quant: bool):
    return quantized_storage(course_lm_in_nf4(double_quant))


def test_nf4_double_quant_layers_stay_within_3_percent_of_the_floor():
    storage = _storage(double_quant=True)
    assert storage.bits_per_weight == pytest.approx(NF4_DOUBLE_QUANT_FLOOR_BITS, rel=1e-3)
    assert storage.bits_per_weight_with_tables / NF4_DOUBLE_QUANT_FLOOR_BITS < 1.03  # code tables included


def test_without_double_quant_the_scales_cost_half_a_bit_more():
    """The measure can fail: 32-bit absmax per block of 64 is 4.5 bits per weight, 9% over the floor."""
    storage = _storage(double_quant=False)
    assert storage.bits_per_weight == pytest.approx(4.5, rel=1e-3)
    assert storage.bits_per_weight / NF4_DOUBLE_QUANT_FLOOR_BITS > 1.03
