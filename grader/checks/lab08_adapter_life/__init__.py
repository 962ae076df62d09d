"""Lab 08, the adapter's life after training: resume, the base it belongs to, several adapters, the base's own
outputs and a weighted blend, each recorded in the kernel (kernel.py) and judged from its record (judges.py).

Plain data only: the grader reads OUTSIDE without importing the checks (checks.outside_targets).
"""

# Test cells decided again outside the kernel (checks.OUTSIDE_KINDS).
OUTSIDE = {
    "test_resume": "judges.resumed_adapter",
    "test_belongs": "judges.base_match",
    "test_multi": "judges.adapter_set",
    "test_base_only": "judges.base_only_outputs",
    "test_blend": "judges.weighted_blend",
}
