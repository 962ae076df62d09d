"""Lab 07, the capstone: lab 04's QLoRA rules, the Trainer's precision and the EOS labelled in its batches
(judges.py), the reload (kernel.py), and the saved adapter, its validation loss and the exact match of its
answers, recomputed from the files (files.py).

Plain data only: the grader reads OUTSIDE without importing the checks (checks.outside_targets).
"""

# Test cells decided again outside the kernel (checks.OUTSIDE_KINDS).
OUTSIDE = {
    "test_bnb_config": "judges.quantization_config",
    "test_loaded_4bit": "judges.loaded_in_4bit",
    "test_kbit_prepared": "judges.kbit_prepared",
    "test_lora_config": "judges.llama_lora_config",
    "test_trainable_share": "judges.trainable_share",
    "test_precision": "judges.precision_flags",
    "test_eos_labelled": "judges.eos_labelled",
    "test_adapter_only": "files.adapter_only_saved",
    "test_adapter_trained": "files.adapter_trained",
    "test_val_improved": "files.validation_improved",
    "test_answers_improved": "files.answers_improved",
}

# The Trainer trains its own model with its own arguments: what the checks of the model and of the precision
# flags judge too, recorded right after training (not `model` or `training_args`, which a later cell may rebind).
# And it trains on the batches its own collator builds: the locked cell show_labels collates the first rows of
# its training set into `first_batch` (plain lists) just before training, recorded right after that cell.
RECORDS = {
    "show_labels": {"batch": ["first_batch", "value"]},
    "train": {
        "model": ["trainer.model", "manifest"],
        "precision": ["trainer.args", "precision"],
        "end": ["trainer.model", "adapter_state"],
    },
}
# What the saved adapter is judged against (files.py, its provenance), recorded in a clean room just before the
# locked cell `train` runs (RECORDS_BEFORE) and right after it: the adapter the Trainer starts from (untrained),
# whether it had stepped or built an optimizer already, the rows it trains on (the lab's training split), and the
# adapter it ends with (the tensors a save must hold).
RECORDS_BEFORE = {
    "train": {
        "start": ["trainer.model", "adapter_state"],
        "rows": ["trainer.train_dataset", "token_rows"],
        "optimizer": ["trainer.optimizer", "value"],
        "step": ["trainer.state.global_step", "value"],
    },
}
# The locked cells whose work the kernel guard watches (kernel_guard.watch). Code of the learner's cells that runs
# inside them (a collator's method, a hook on the model, one that removes itself afterwards) is held for review:
# a debugging hook is honest, and no check can tell it from one that steers training.
WATCH = {"before": "the Trainer built, and the base measured", "train": "the Trainer's training"}
FROM_RECORDS = {
    # the learner's BitsAndBytesConfig, and the config the trained model's layers were really loaded with
    "test_bnb_config": ["train", "model", "model"],
    "test_loaded_4bit": ["train", "model", None],
    "test_kbit_prepared": ["train", "model", None],
    "test_lora_config": ["train", "model", None],
    "test_trainable_share": ["train", "model", None],
    "test_precision": ["train", "precision", None],
    "test_eos_labelled": ["show_labels", "batch", None],
}
