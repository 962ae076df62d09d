"""Lab 00, set-up and the environment doctor: `choose_compute_dtype()` on simulated machines (kernel.py) and
the bnb_config for the real hardware (judges.py).

Plain data only: the grader reads OUTSIDE without importing the checks (checks.outside_targets).
"""

# Test cells decided again outside the kernel (checks.OUTSIDE_KINDS).
OUTSIDE = {
    "test_bnb_config": "judges.bnb_config_here",
}
