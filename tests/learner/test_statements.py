"""What the labs state about the pinned libraries, checked by running them, and facts the labs must state alike.

Each test names the lab text it stands behind; a library upgrade that changes the behaviour fails here first.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat
import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from transformers import AutoModelForSequenceClassification

from labutils.facts import BERT_ATTENTION
from labutils.models import ensure_tiny_model

MASTERS = sorted((Path(__file__).resolve().parents[2] / "grader" / "source").glob("*/*.ipynb"))


@pytest.fixture(scope="module")
def bert():
    return AutoModelForSequenceClassification.from_pretrained(ensure_tiny_model("classifier"))


def _lora_on(model, **config) -> list[str]:
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, **config))
    return [name for name, module in peft_model.named_modules() if isinstance(module, LoraLayer)]


def test_all_linear_wraps_a_classifier_head_unless_the_task_type_is_seq_cls(bert):
    """Lab 02: "all-linear" leaves a classifier's head out only with task_type="SEQ_CLS" (peft's
    _maybe_include_all_linear_layers); without it the head gets a LoRA adapter like any linear layer."""
    without = _lora_on(bert, target_modules="all-linear")
    with_task = _lora_on(bert, target_modules="all-linear", task_type="SEQ_CLS")
    assert "base_model.model.classifier" in without
    assert not any("classifier" in name for name in with_task)
    assert any(name.endswith("intermediate.dense") for name in with_task), "all-linear wraps the MLP too"


def test_save_pretrained_picks_tensors_by_name_not_by_requires_grad(bert, tmp_path):
    """Lab 06: a head unfrozen by hand trains, but save_pretrained writes the LoRA matrices and modules_to_save
    only (get_peft_model_state_dict selects by name), so the head is lost; in modules_to_save it is saved."""
    by_hand = get_peft_model(copy.deepcopy(bert), LoraConfig(r=4, target_modules=list(BERT_ATTENTION)))
    by_hand.base_model.model.classifier.requires_grad_(True)
    assert any("classifier" in n for n, p in by_hand.named_parameters() if p.requires_grad)
    saved = {}
    for name, model in [
        ("by_hand", by_hand),
        ("seq_cls", get_peft_model(copy.deepcopy(bert), LoraConfig(r=4, target_modules=list(BERT_ATTENTION), task_type="SEQ_CLS"))),
    ]:  # fmt: skip
        model.save_pretrained(tmp_path / name)
        with safe_open(tmp_path / name / "adapter_model.safetensors", framework="pt") as f:
            saved[name] = [key for key in f.keys() if "classifier" in key]
    assert saved["by_hand"] == []
    assert sorted(saved["seq_cls"]) == [
        "base_model.model.classifier.bias",
        "base_model.model.classifier.weight",
    ]


def test_fp4_levels_are_uneven_and_nf4_levels_are_normal_quantiles():
    """Lab 04: bitsandbytes' FP4 is a float code with unevenly spaced levels (not "evenly"); NF4's are the
    quantiles of a normal distribution (each level as likely as the next)."""
    import bitsandbytes.functional as bnbF

    fp4 = sorted(set(bnbF.get_4bit_type("fp4", device="cpu").tolist()))
    gaps = [b - a for a, b in zip(fp4[:-1], fp4[1:], strict=True)]
    assert len(fp4) == 15, "+0 and -0 take two of FP4's 16 codes"
    assert max(gaps) / min(gaps) > 10, gaps
    nf4 = sorted(bnbF.get_4bit_type("nf4", device="cpu").tolist())
    normal = torch.distributions.Normal(0.0, 1.0)
    offset = 0.9677  # bitsandbytes' create_normal_map: the outermost quantile, scaled to 1
    quantiles = normal.icdf(torch.linspace(0.5, offset, 9)[1:]) / normal.icdf(torch.tensor(offset))
    assert torch.allclose(torch.tensor(nf4[-8:]), quantiles, atol=2e-3), (nf4[-8:], quantiles)


def test_peft_keeps_the_adapter_in_fp32_and_sft_trainer_casts_a_quantized_ones_to_bf16(tmp_path):
    """Lab 04's statement of the adapter's precision: get_peft_model upcasts a 16-bit adapter to fp32
    (autocast_adapter_dtype); TRL's SFTTrainer casts the trainable parameters of a 4-bit model to bf16."""
    from datasets import Dataset
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    causal_lm = ensure_tiny_model("causal_lm")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    bf16_base = AutoModelForCausalLM.from_pretrained(causal_lm, dtype=torch.bfloat16)
    assert {p.dtype for p in get_peft_model(bf16_base, lora).parameters() if p.requires_grad} == {
        torch.float32
    }

    four_bit = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
    )
    model = prepare_model_for_kbit_training(
        AutoModelForCausalLM.from_pretrained(causal_lm, quantization_config=four_bit)
    )
    model = get_peft_model(model, copy.deepcopy(lora))
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    args = SFTConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to=[], max_steps=1)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"text": ["a short text"] * 2}),
        processing_class=AutoTokenizer.from_pretrained(causal_lm),
    )
    assert {p.dtype for p in trainer.model.parameters() if p.requires_grad} == {torch.bfloat16}


# ---- one fact, one statement ------------------------------------------------------------------------------
# A list of BERT's attention projections in a lab: "query" and "value" within a few characters of each other
# ("`query`/`value`", "`query` and `value`", '["query", "value"]'), and "key" must be among them. Cells that show
# a mistake on purpose (grade ids starting "mistake") are exempt.
BERT_LIST = re.compile(r"query\W{1,8}(?:\w+\W{1,8})?value")


def test_every_lab_states_the_same_bert_targets():
    """Labs 02, 04 and 06 (and their checks, through labutils.facts.ATTENTION) agree on BERT's targets:
    query, key and value."""
    assert BERT_ATTENTION == ("query", "key", "value")
    found, wrong = 0, []
    for master in MASTERS:
        for cell in nbformat.read(master, as_version=4).cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id", "")
            for match in BERT_LIST.finditer(cell.source):
                found += 1
                if "key" not in match.group() and not gid.startswith("mistake"):
                    wrong.append(f"{master.parent.name} {gid}: {match.group()!r}")
    assert found >= 5, "the pattern no longer finds the labs' statements"
    assert wrong == [], (
        "a lab states BERT targets without key (labutils.facts.BERT_ATTENTION):\n" + "\n".join(wrong)
    )
