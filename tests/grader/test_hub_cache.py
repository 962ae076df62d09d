"""The hub rehearsal's cache: each hub id holds a course model, in the cache's own layout, shaped like the hub's."""

from __future__ import annotations

import torch
from huggingface_hub import snapshot_download
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from labutils.models import RECIPES
from labutils.profiles import hub_model_id
from peft_grader.hub_cache import seed_hub_cache


def test_the_hub_causal_lm_trains_about_the_share_it_trains_on_colab(tmp_path):
    seeded = seed_hub_cache(tmp_path, roles=["causal_lm"])
    repo_id = hub_model_id("causal_lm")
    path = snapshot_download(repo_id, cache_dir=tmp_path, local_files_only=True, revision=seeded[repo_id])
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
        LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    )
    trainable, total = model.get_nb_trainable_parameters()
    assert model.config.vocab_size == RECIPES["causal_lm"].config["vocab_size"] == 8192
    # SmolLM2-360M: 0.90% (the tiny causal LM with a 32,000-row head, as it was: 0.30%)
    assert 0.85 < 100 * trainable / total < 1.0
