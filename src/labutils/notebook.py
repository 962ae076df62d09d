"""Set-up helpers for lab notebooks (not the PEFT patterns: those are written out in each lab)."""

from __future__ import annotations


def quiet() -> None:
    """Hide transformers' per-load progress bars and info logs so lab output stays readable."""
    import warnings

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
