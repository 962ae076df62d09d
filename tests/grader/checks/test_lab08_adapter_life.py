"""Lab 08's checks (grader/checks/lab08_adapter_life/): the judges on hand-made records, and the records made
from real adapters on the course's tiny Llama (the graded catalogue proves them end to end)."""

from __future__ import annotations

import pytest


@pytest.fixture
def judges(hidden_check):
    return hidden_check("lab08_adapter_life.judges")


RESUMED = {"adapters": ["default"], "lora_params": 100, "lora_trainable": 100, "other_trainable": 0,
           "saved_tensors": 16, "matched": 16, "drift": 0.04, "moved": True}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"lora_trainable": 0}, "0 trainable parameters"),
        ({"other_trainable": 5}, "outside the adapter"),
        ({"drift": 1.4}, "NEW one"),
        ({"matched": 0, "drift": None}, "not the saved adapter's tensors"),
        ({"moved": False}, "did not update"),
    ],
)
def test_resume_judge_names_each_way_of_not_resuming(judges, change, words):
    judges.resumed_adapter(RESUMED)
    with pytest.raises(AssertionError, match=words):
        judges.resumed_adapter(RESUMED | change)


def test_base_match_judge_wants_both_kinds_of_wrong_base_flagged(judges):
    ok = {"own base": {"verdict": "belongs", "detail": "[]"}}
    flagged = {"verdict": "flagged", "detail": "['x']"}
    missed = {"verdict": "belongs", "detail": "[]"}
    good = ok | {"another checkpoint, same name": flagged, "same weights, another name": flagged}
    judges.base_match(good)
    with pytest.raises(AssertionError, match="another checkpoint"):
        judges.base_match(good | {"another checkpoint, same name": missed})
    with pytest.raises(AssertionError, match="name differs"):
        judges.base_match(good | {"same weights, another name": missed})
    with pytest.raises(AssertionError, match="own, freshly loaded base"):
        judges.base_match(good | {"own base": flagged})
    with pytest.raises(AssertionError, match="raised"):
        judges.base_match(good | {"own base": {"verdict": "error", "detail": "KeyError: 'r'"}})


def test_blend_judge_tells_swapped_weights_from_another_combination(judges):
    blend = {"adapters": ["blend", "concise", "instruct"], "active": ["blend"], "error": 0.003,
             "swapped_error": 0.6, "rank": 32}  # fmt: skip
    judges.weighted_blend(blend)
    with pytest.raises(AssertionError, match="swapped"):
        judges.weighted_blend(blend | {"error": 0.6, "swapped_error": 0.003})
    with pytest.raises(AssertionError, match="'linear' averages"):
        judges.weighted_blend(blend | {"error": 0.6, "swapped_error": 0.5})
    with pytest.raises(AssertionError, match="without activating"):
        judges.weighted_blend(blend | {"active": ["concise"]})


@pytest.mark.training
def test_records_read_the_real_adapter_state(hidden_check, tmp_path):
    """On real adapters: a trainable reload resumes, a frozen one does not; two loaded adapters, one
    active; get_base_model() still computes the adapter, disable_adapter() does not; 'cat' is exact."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from labutils.models import ensure_tiny_model

    life = hidden_check("lab08_adapter_life.kernel")
    model_id = str(ensure_tiny_model("causal_lm"))

    def base():
        return AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.bfloat16)

    for seed, name in ((0, "one"), (1, "two")):
        torch.manual_seed(seed)
        trained = get_peft_model(base(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
        for n, p in trained.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.02)
        trained.save_pretrained(tmp_path / name)
    ns = {"ADAPTER_DIR": tmp_path / "one", "SECOND_DIR": tmp_path / "two", "MODEL": model_id}

    resumed = PeftModel.from_pretrained(base(), tmp_path / "one", is_trainable=True)
    with torch.no_grad():
        next(p for n, p in resumed.named_parameters() if "lora_A" in n).add_(1e-3)  # a training step
    life.resume_trainable(ns | {"resumed": resumed})
    with pytest.raises(AssertionError, match="0 trainable"):
        life.resume_trainable(ns | {"resumed": PeftModel.from_pretrained(base(), tmp_path / "one")})

    multi = PeftModel.from_pretrained(base(), tmp_path / "one", adapter_name="instruct")
    multi.load_adapter(tmp_path / "two", adapter_name="concise")
    with pytest.raises(AssertionError, match="without activating"):
        life.multi_adapters(ns | {"multi": multi})
    multi.set_adapter("concise")
    life.multi_adapters(ns | {"multi": multi})

    probe = {"input_ids": torch.arange(5, 17).unsqueeze(0)}

    class Probe(dict):
        def to(self, device):
            return self

    ns |= {"multi": multi, "probe": Probe(probe)}
    with torch.no_grad(), multi.disable_adapter():
        off = multi(**probe).logits.float()
    life.base_only(ns | {"base_only_logits": off})
    with torch.no_grad():
        through_base = multi.get_base_model()(**probe).logits.float()
    with pytest.raises(AssertionError, match="get_base_model"):
        life.base_only(ns | {"base_only_logits": through_base})

    multi.add_weighted_adapter(["instruct", "concise"], [0.7, 0.3], "blend", combination_type="cat")
    multi.set_adapter("blend")
    life.blend(ns)
    multi.delete_adapter("blend")
    multi.add_weighted_adapter(["instruct", "concise"], [0.7, 0.3], "blend", combination_type="linear")
    multi.set_adapter("blend")
    with pytest.raises(AssertionError, match="'linear' averages"):
        life.blend(ns)
