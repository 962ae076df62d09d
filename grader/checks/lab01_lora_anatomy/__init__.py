"""Lab 01, LoRA's anatomy: the learner's parameter count against peft's on fresh models (kernel.py), and
the wrapped course model with its trainable share (judges.py).

Plain data only: the grader reads OUTSIDE without importing the checks (checks.outside_targets).
"""

# Test cells decided again outside the kernel (checks.OUTSIDE_KINDS).
OUTSIDE = {
    "test_wrapped": "judges.course_model_wrapped",
    "test_trainable_share": "judges.course_model_share",
}
