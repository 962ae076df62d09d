"""Lab 09, chat fine-tuning with TRL's SFTTrainer: tokens, template, LoRA config, labels and precision
(judges.py, from the records kernel.py publishes), the saved folder and generation from it (files.py).

Plain data only: the grader reads OUTSIDE without importing the checks (checks.outside_targets).
"""

# Test cells decided again outside the kernel (checks.OUTSIDE_KINDS).
OUTSIDE = {
    "test_tokens": "judges.chat_tokens",
    "test_template": "judges.chat_template_mask",
    "test_lora_config": "judges.chat_lora",
    "test_labels": "judges.sft_labels",
    "test_precision": "judges.precision_flags",
    "test_adapter_saved": "files.adapter_saved",
    "test_stops": "files.generation_stops",
}
