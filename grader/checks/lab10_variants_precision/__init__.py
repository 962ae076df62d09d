"""Lab 10, LoRA's variants and precision: each recorded in the kernel (kernel.py) and judged from its record
(judges.py).

Plain data only: the grader reads OUTSIDE without importing the checks (checks.outside_targets).
"""

# Test cells decided again outside the kernel (checks.OUTSIDE_KINDS).
OUTSIDE = {
    "test_variants": "judges.lora_variants",
    "test_choice": "judges.variant_choice",
    "test_memory": "judges.memory_formula",
    "test_fp16": "judges.fp16_ready",
    "test_merge": "judges.merge_fidelity",
}

# The comparison cell measures each variant's final loss per seed: the choice is judged on what it measured, not
# on the learner's `results` as a later cell may have left it.
RECORDS = {"compare": {"seed_losses": ["results", "seed_losses"]}}
FROM_RECORDS = {"test_choice": ["compare", "seed_losses", "seed_losses"]}
