"""Lab 06, task heads and modules_to_save: the LoRA config and the wrapped head (judges.py), training, accuracy
and the reload (kernel.py), and the head saved in the adapter (files.py).

Plain data only: the grader reads OUTSIDE without importing the checks (checks.outside_targets).
"""

# Test cells decided again outside the kernel (checks.OUTSIDE_KINDS).
OUTSIDE = {
    "test_lora_config": "judges.bert_lora_config",
    "test_head_wrapped": "judges.head_wrapped",
    "test_head_saved": "files.head_saved",
}

# The training loop trains `model`: the model's checks judge the model it trained too; and its adapter, recorded just
# before the loop and right after it, shows that the loop trained it (kernel.trained).
RECORDS = {"train_loop": {"model": ["model", "manifest"], "end": ["model", "adapter_state"]}}
RECORDS_BEFORE = {"train_loop": {"start": ["model", "adapter_state"]}}
FROM_RECORDS = {
    "test_lora_config": ["train_loop", "model", None],
    "test_head_wrapped": ["train_loop", "model", None],
}
