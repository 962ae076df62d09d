"""Lab 03, rank and alpha: the sweep against peft's own counts (kernel.py) and the chosen config (judges.py).

Plain data only: the grader reads OUTSIDE without importing the checks (checks.outside_targets).
"""

# Test cells decided again outside the kernel (checks.OUTSIDE_KINDS).
OUTSIDE = {
    "test_chosen_rank": "judges.chosen_rank",
    "test_chosen_alpha": "judges.chosen_alpha",
    "test_chosen_targets": "judges.chosen_targets",
}
