"""Looking inside models the labs build: 4-bit storage cost, against the QLoRA paper's floor."""

from __future__ import annotations

from dataclasses import dataclass

# QLoRA paper: NF4 (4 bits) + double-quantized block scales (8/64 + 32/(64*256) bits) per weight.
NF4_DOUBLE_QUANT_FLOOR_BITS = 4 + 8 / 64 + 32 / (64 * 256)


@dataclass
class QuantizedStorage:
    weights: int  # quantized weights stored
    bits_packed: int  # packed 4-bit codes
    bits_scales: int  # absmax (8-bit when double-quantized) + nested absmax + offset
    bits_tables: int  # per-layer code tables (16 NF4 values, 256 for the nested 8-bit code)

    @property
    def bits_per_weight(self) -> float:
        """Packed codes and scales: the figure the paper's 4.127 bits describes."""
        return (self.bits_packed + self.bits_scales) / self.weights

    @property
    def bits_per_weight_with_tables(self) -> float:
        return (self.bits_packed + self.bits_scales + self.bits_tables) / self.weights


def _bits(tensor) -> int:
    return 0 if tensor is None else tensor.numel() * tensor.element_size() * 8


def quantized_storage(model) -> QuantizedStorage:
    """Count the real bytes of every bitsandbytes Linear4bit layer from its quant_state.

    `get_memory_footprint()` does not see the quantization state, so we read it ourselves.
    """
    import bitsandbytes as bnb

    weights = packed = scales = tables = 0
    for module in model.modules():
        if not isinstance(module, bnb.nn.Linear4bit):
            continue
        state = module.weight.quant_state
        weights += state.shape.numel()
        packed += _bits(module.weight.data)
        scales += _bits(state.absmax) + _bits(getattr(state, "offset", None))
        tables += _bits(state.code)
        if state.nested:
            scales += _bits(state.state2.absmax)
            tables += _bits(state.state2.code)
    if not weights:
        raise ValueError("this model has no bitsandbytes Linear4bit layers: was it loaded in 4-bit?")
    return QuantizedStorage(weights, packed, scales, tables)


def course_lm_in_nf4(double_quant: bool = True):
    """The course's causal LM loaded in NF4 (bf16 compute), as the QLoRA lab loads it."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from labutils.profiles import course_model

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    return AutoModelForCausalLM.from_pretrained(course_model("causal_lm"), quantization_config=config)
