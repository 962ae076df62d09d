"""Lab 05, save the adapter, load it, merge only to deploy: the reload and the merged model in memory
(kernel.py), the adapter and deployment folders and the deployment copy against the grader's own merge (files.py).

Plain data only: the grader reads OUTSIDE without importing the checks (checks.outside_targets).
"""

# Test cells decided again outside the kernel (checks.OUTSIDE_KINDS).
OUTSIDE = {
    "test_adapter_only": "files.adapter_only_saved",
    "test_deploy_copy": "files.deploy_copy_saved",
    "test_merged_outputs": "files.deploy_matches_adapter",
}

# The trained model as the lab measured it: the locked cell example_logits computes the outputs the reload is compared
# with (trained_logits), after the adapter was saved and before the reload; the kernel guard records that model's
# adapter (the digest of each tensor, from peft's own modules) right after it. test_reload_equal wants the saved file
# to hold exactly that adapter, so a `model` rebound or trained further after it cannot stand in for the trained one.
RECORDS = {"example_logits": {"trained": ["model", "adapter_state"]}}
