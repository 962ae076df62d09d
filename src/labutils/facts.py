"""Facts the labs teach and the hidden checks enforce, in one place: standard library only, no torch.

A lab states them and a check judges by them, so the two cannot drift apart: the target modules per
architecture, the guide's rank range, and the rule that picks the compute dtype and the Trainer's
mixed-precision flags for the hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

# ---- target modules per architecture ---------------------------------------------------------------
LLAMA_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")  # Llama, Mistral, Qwen2: the attention projections
LLAMA_MLP = ("gate_proj", "up_proj", "down_proj")
LLAMA_NAMES = LLAMA_ATTENTION + LLAMA_MLP
BERT_ATTENTION = ("query", "key", "value")  # BERT, RoBERTa: the self-attention projections


@dataclass(frozen=True)
class Attention:
    """Where one naming family keeps its attention projections (full-name regexes)."""

    required: str  # every query/key/value projection, fused or separate
    optional: str  # the attention output projection
    names: str  # how a message names them


_LLAMA_LIKE = Attention(
    r".*\.self_attn\.[qkv]_proj", r".*\.self_attn\.o_proj", "q_proj, k_proj, v_proj (o_proj optional)"
)
_BERT_LIKE = Attention(
    r".*\.attention\.self\.(query|key|value)",
    r".*\.attention\.output\.dense",
    "query, key, value (the other `dense` layers are MLP, pooler or head)",
)
# config.model_type -> its attention projections: what lab 02 asks a learner's attention_targets to find.
ATTENTION = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "phi": Attention(
        r".*\.self_attn\.[qkv]_proj",
        r".*\.self_attn\.dense",
        "q_proj, k_proj, v_proj (self_attn.dense optional; fc1/fc2 are the MLP)",
    ),
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "gpt2": Attention(
        r".*\.attn\.c_attn",
        r".*\.attn\.c_proj",
        "c_attn, the fused q/k/v Conv1D (attn.c_proj optional; c_fc and mlp.c_proj are the MLP)",
    ),
    "gpt_neox": Attention(
        r".*\.attention\.query_key_value",
        r".*\.attention\.dense",
        "query_key_value, the fused q/k/v layer (attention.dense optional; dense_h_to_4h/dense_4h_to_h are the MLP)",
    ),
    "falcon": Attention(
        r".*\.self_attention\.query_key_value",
        r".*\.self_attention\.dense",
        "query_key_value, the fused q/k/v layer (self_attention.dense optional; dense_h_to_4h/dense_4h_to_h are the MLP)",
    ),
    "t5": Attention(
        r".*\.(SelfAttention|EncDecAttention)\.[qkv]",
        r".*\.(SelfAttention|EncDecAttention)\.o",
        "q, k, v in SelfAttention and EncDecAttention (o optional; wi/wo are the MLP)",
    ),
}

# ---- rank ---------------------------------------------------------------------------------------------
RANK_RANGE = (8, 16)  # the guide: "8-16 for most tasks"; the QLoRA labs' instruction task is a simple one


# ---- the dtype rule for the hardware ---------------------------------------------------------------------
# One rule, read by the doctor (labutils.doctor.detect_hardware), by the helpers every lab calls
# (labutils.compute_dtype / training_dtype / precision_flags) and by the hidden checks (grader/checks/hardware.py).
# `bf16_supported` means native bf16 on a GPU (compute capability 8.0 or more), as
# torch.cuda.is_bf16_supported(including_emulation=False) answers it: the plain call also says True on a T4,
# where bf16 is only emulated (torch/cuda/__init__.py, is_bf16_supported).
def compute_dtype_name(cuda_available: bool, bf16_supported: bool) -> str:
    """The compute dtype the course uses, by name ("bfloat16" or "float16").

    bfloat16 on a GPU that has it natively (Ampere+, same range as fp32, no loss scaling); float16 on an older
    GPU such as a T4 (compute capability 7.5), where bf16 is only emulated; bfloat16 on a CPU too: emulated
    on most CPUs, native on those with bf16 instructions (AVX512-BF16, AMX), and what the correction guide uses.
    """
    return "float16" if cuda_available and not bf16_supported else "bfloat16"


def training_precision(cuda_available: bool, bf16_supported: bool) -> dict[str, bool]:
    """The Trainer's mixed-precision flags for the hardware: {"fp16": ..., "bf16": ...}. Neither on a CPU
    (fp16 autocast there is accepted silently and only slows training), bf16 on a GPU with native bf16,
    fp16 on one without (a T4)."""
    if not cuda_available:
        return {"fp16": False, "bf16": False}
    return {"fp16": not bf16_supported, "bf16": bool(bf16_supported)}


def training_dtype_name(cuda_available: bool, bf16_supported: bool) -> str:
    """The dtype training computes in, by name: the one `training_precision`'s flags select ("float16",
    "bfloat16"), "float32" where neither is set (a CPU)."""
    flags = training_precision(cuda_available, bf16_supported)
    return "float16" if flags["fp16"] else "bfloat16" if flags["bf16"] else "float32"
