"""Lab 02, target modules per architecture: `attention_targets` on fresh tiny models of ten architectures
(kernel.py) and the BERT classifier's LoRA model (judges.py).

Plain data only: the grader reads OUTSIDE without importing the checks (checks.outside_targets).
"""

# Test cells decided again outside the kernel (checks.OUTSIDE_KINDS).
OUTSIDE = {
    "test_lora_model": "judges.bert_lora_model",
}
