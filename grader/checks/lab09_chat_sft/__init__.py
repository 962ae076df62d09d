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
# The locked cells inside whose work a call into the learner's code is held for review (as in lab 07): the
# Trainer's collator shown, then training. A collator of the learner's own, or one wrapped to behave only while it
# is looked at (found by red-teaming), runs there.
WATCH = {"show_labels": "the Trainer's collator shown", "train": "the Trainer's training"}
