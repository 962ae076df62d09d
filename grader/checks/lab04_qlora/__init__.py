"""Lab 04, QLoRA: the BitsAndBytesConfig, the 4-bit model, prepare_model_for_kbit_training, the LoRA config and
the trainable share (judges.py, from the records kernel.py publishes), and the saved adapter (files.py).

Plain data only: the grader reads OUTSIDE without importing the checks (checks.outside_targets).
"""

# Test cells decided again outside the kernel (checks.OUTSIDE_KINDS).
OUTSIDE = {
    "test_bnb_config": "judges.quantization_config",
    "test_loaded_4bit": "judges.loaded_in_4bit",
    "test_kbit_prepared": "judges.kbit_prepared",
    "test_lora_config": "judges.llama_lora_config",
    "test_trainable_share": "judges.trainable_share",
    "test_adapter_only": "files.adapter_only_saved",
    "test_adapter_trained": "files.adapter_trained",
}

# The training loop trains whatever `model` is then: that model's manifest, recorded right after it ran, is what
# the model's checks judge too (a model bound to `model` only for the tests is not the one that did the work), and the
# BitsAndBytesConfig check judges the storage its layers were really loaded with (their quant_state) beside the
# learner's `bnb_config`. And the adapter it trains, recorded just before the loop (RECORDS_BEFORE) and right after
# it: the saved adapter must hold the tensors the loop ended with, and the loop must have changed them (files.py).
RECORDS = {"train_loop": {"model": ["model", "manifest"], "end": ["model", "adapter_state"]}}
RECORDS_BEFORE = {"train_loop": {"start": ["model", "adapter_state"]}}
FROM_RECORDS = {
    "test_bnb_config": ["train_loop", "model", "model"],
    "test_loaded_4bit": ["train_loop", "model", None],
    "test_kbit_prepared": ["train_loop", "model", None],
    "test_lora_config": ["train_loop", "model", None],
    "test_trainable_share": ["train_loop", "model", None],
}
