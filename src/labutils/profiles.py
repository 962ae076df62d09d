"""Model profiles: the same notebooks run offline on a CPU (`tiny`) or on a GPU with real hub models (`hub`).

One environment variable, PEFT_COURSE_PROFILE, selects the profile. `course_model(role)` returns what
a lab passes to `from_pretrained`: a local directory in `tiny`, a hub model id in `hub`.
"""

from __future__ import annotations

import os

from labutils.errors import CourseError

PROFILE_VAR = "PEFT_COURSE_PROFILE"
PROFILES = ("tiny", "hub")
DEFAULT_PROFILE = "tiny"

# Ungated models of the real architectures, small enough for a Colab T4. Each can be overridden
# with PEFT_COURSE_MODEL_<ROLE>, e.g. PEFT_COURSE_MODEL_CAUSAL_LM=meta-llama/Llama-3.1-8B (with a token).
HUB_MODELS = {
    # Llama architecture, 362M parameters stored in bf16 (about 0.72 GB to download, a quarter of TinyLlama
    # 1.1B's 4.4 GB in fp32): r=16 on q/k/v/o trains 0.90%, under the guide's 1% (SmolLM2-135M, hidden size
    # 576, trains 1.4%). bench/hub_memory.py holds its shapes.
    "causal_lm": "HuggingFaceTB/SmolLM2-360M",
    # The capstone's model: in the tiny profile the course's pretrained base (labutils.world); a hub model has
    # not read that world, so it learns the answers' form there, not the facts (lab 07 says so).
    "world_lm": "HuggingFaceTB/SmolLM2-360M",
    "classifier": "google-bert/bert-base-uncased",
    "gpt2": "openai-community/gpt2",
    "mistral": "hf-internal-testing/tiny-random-MistralForCausalLM",
    "qwen2": "Qwen/Qwen2.5-0.5B",
    "gpt_neox": "EleutherAI/pythia-70m",
    "falcon": "tiiuae/falcon-rw-1b",
    "t5": "google-t5/t5-small",
    "phi": "microsoft/phi-1_5",
    "roberta": "FacebookAI/roberta-base",
}
ROLES = tuple(HUB_MODELS)


def current_profile() -> str:
    """The selected profile; a clear error for an unknown value."""
    value = os.environ.get(PROFILE_VAR, DEFAULT_PROFILE).strip().lower() or DEFAULT_PROFILE
    if value not in PROFILES:
        raise CourseError(
            f"{PROFILE_VAR}={value!r} is not a course profile. Valid profiles: {', '.join(PROFILES)} "
            f"(tiny: offline CPU models built locally; hub: real models, GPU recommended). "
            f"Fix: export {PROFILE_VAR}=tiny (or unset it)."
        )
    return value


def role_override_var(role: str) -> str:
    return f"PEFT_COURSE_MODEL_{role.upper()}"


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise CourseError(f"Unknown course model role {role!r}. Valid roles: {', '.join(ROLES)}.")


def hub_model_id(role: str) -> str:
    _check_role(role)
    return os.environ.get(role_override_var(role)) or HUB_MODELS[role]


def course_model(role: str = "causal_lm") -> str:
    """What to pass to `from_pretrained` for this role in the current profile.

    tiny: a local directory holding a bf16 checkpoint and its tokenizer, built on first use.
    hub: the model id (PEFT_COURSE_MODEL_<ROLE> overrides the default).
    """
    _check_role(role)
    if current_profile() == "hub":
        return hub_model_id(role)
    from labutils.models import ensure_tiny_model

    return str(ensure_tiny_model(role))
