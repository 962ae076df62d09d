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
