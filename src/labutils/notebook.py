"""Set-up helpers for lab notebooks (not the PEFT patterns: those are written out in each lab)."""

from __future__ import annotations


def quiet() -> None:
    """Hide transformers' per-load progress bars and info logs so lab output stays readable, and
    bitsandbytes' advice to `pip install kernels` (the doctor's "4-bit kernel" row says what it means).
    bitsandbytes logs that once, when imported, and `import peft` imports it: call quiet() first. Also keeps
    4-bit layers trainable on every CPU (doctor.keep_4bit_layers_trainable)."""
    import warnings

    import transformers

    from labutils.doctor import hide_bnb_hub_kernel_notice, keep_4bit_layers_trainable

    hide_bnb_hub_kernel_notice()  # before a lab's first 4-bit load imports bitsandbytes
    keep_4bit_layers_trainable()

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
