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
    with pytest.raises(AssertionError, match="two answers for the adapter's own base"):
        judges.base_match(good | {"own base": {"verdict": "inconsistent", "detail": "belongs, then flagged"}})


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

    class Zeros(torch.Tensor):  # found by red-teaming: it answered zeros to the check's subtraction
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in ("sub", "__sub__", "__rsub__", "sub_"):
                return torch.zeros(tuple(args[0].shape))
            return super().__torch_function__(func, types, args, kwargs or {})

    with pytest.raises(AssertionError, match="get_base_model"):
        life.base_only(ns | {"base_only_logits": through_base.as_subclass(Zeros)})
    life.base_only(ns | {"base_only_logits": off.as_subclass(Zeros)})  # right values: judged on them

    class Wrapped(torch.Tensor):  # a subclass at the dispatch level: torch's own methods give it back
        @staticmethod
        def __new__(cls, inner):
            return torch.Tensor._make_wrapper_subclass(cls, inner.shape, dtype=inner.dtype)

        def __init__(self, inner):
            self.inner = inner

        @classmethod
        def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
            def unwrap(x):
                return x.inner if isinstance(x, Wrapped) else x

            out = func(*map(unwrap, args), **{k: unwrap(v) for k, v in (kwargs or {}).items()})
            return Wrapped(out) if isinstance(out, torch.Tensor) else out

    with pytest.raises(AssertionError, match="base_only_logits is a Wrapped, not the logits tensor"):
        life.base_only(ns | {"base_only_logits": Wrapped(off)})

    multi.add_weighted_adapter(["instruct", "concise"], [0.7, 0.3], "blend", combination_type="cat")
    multi.set_adapter("blend")
    life.blend(ns)
    multi.delete_adapter("blend")
    multi.add_weighted_adapter(["instruct", "concise"], [0.7, 0.3], "blend", combination_type="linear")
    multi.set_adapter("blend")
    with pytest.raises(AssertionError, match="'linear' averages"):
        life.blend(ns)
    # found by red-teaming: each layer's get_delta_weight replaced on the instance, answering the right blend
    from peft.tuners.lora import LoraLayer

    def lying_delta(layer):
        own = type(layer).get_delta_weight

        def delta(adapter):
            if adapter == "blend":
                return 0.7 * own(layer, "instruct") + 0.3 * own(layer, "concise")
            return own(layer, adapter)

        return delta

    for layer in multi.modules():
        if isinstance(layer, LoraLayer) and "blend" in layer.lora_A:
            layer.get_delta_weight = lying_delta(layer)
    with pytest.raises(AssertionError, match="blend"):
        life.blend(ns)


# What kernel._status records of `multi` with both saved adapters loaded (four LoRA layers: q/v_proj x 2).
STATUS = {
    "adapters": ["concise", "instruct"],
    "active": ["concise"],
    "layers": 4,
    "merged": [],
    "enabled": True,
}
ADAPTER_SET = STATUS | {"instruct_vs_saved": 0.0, "concise_vs_saved": 0.0}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            {"adapters": ["default"]},
            r"`multi` has no adapter named concise, instruct \(it has \['default'\]\)",
        ),
        ({"adapters": ["concise", "default"]}, r"no adapter named instruct .*adapter_name='instruct'"),
        ({"instruct_vs_saved": None}, r"adapter named instruct is not the one saved in ADAPTER_DIR"),
        (
            {"concise_vs_saved": 0.02},
            r"adapter named concise is not the one saved in SECOND_DIR.*'concise'\)",
        ),
        (
            {"merged": ["instruct"]},
            r"\['instruct'\] is merged into the base weights: the adapters no longer switch",
        ),
        ({"active": ["instruct"]}, r"the active adapter is \['instruct'\].*set_adapter\('concise'\)"),
    ],
    ids=["none of them", "one missing", "instruct not loaded", "concise not saved one", "merged", "inactive"],
)
def test_adapter_set_judge_names_each_way_of_not_loading_both(judges, change, words):
    judges.adapter_set(ADAPTER_SET)
    judges.adapter_set(ADAPTER_SET | {"instruct_vs_saved": 1e-7})  # float rounding of the saved tensors
    with pytest.raises(AssertionError, match=r"\[Several adapters on one base: .*\] .*" + words):
        judges.adapter_set(ADAPTER_SET | change)


BASE_ONLY = STATUS | {"shape_ok": True, "max_diff": 0.0, "scale": 4.2}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"layers": 0, "active": []}, r"`multi` no longer carries any adapter layer: unload\(\)"),
        ({"shape_ok": False, "max_diff": None}, r"base_only_logits do not have the probe's shape"),
        ({"max_diff": 0.37}, r"differ from the bare base's by up to 0\.37: an adapter still computed"),
        ({"enabled": False}, r"left disabled.*`with multi\.disable_adapter\(\):`"),
    ],
    ids=["unloaded", "wrong shape", "adapter computed", "left disabled"],
)
def test_base_only_judge_names_each_way_of_missing_the_bare_base(judges, change, words):
    judges.base_only_outputs(BASE_ONLY)
    with pytest.raises(
        AssertionError, match=r"\[The base's own outputs come from disable_adapter\(\).*\] .*" + words
    ):
        judges.base_only_outputs(BASE_ONLY | change)


def test_blend_judge_wants_the_blend_to_exist_with_its_parts(judges):
    blend = STATUS | {"adapters": ["blend", "concise", "instruct"], "active": ["blend"], "error": 0.003,
                      "swapped_error": 0.6, "rank": 32}  # fmt: skip
    with pytest.raises(
        AssertionError, match=r"has no adapter named blend \(it has \['concise', 'instruct'\]\)"
    ):
        judges.weighted_blend(
            blend | {"adapters": ["concise", "instruct"], "error": None, "swapped_error": None}
        )
    with pytest.raises(AssertionError, match=r"no LoRA layer of `multi` carries blend, instruct and concise"):
        judges.weighted_blend(blend | {"error": None, "swapped_error": None})


def test_adapter_problems_must_be_a_function(hidden_check, verdict):
    life = hidden_check("lab08_adapter_life.kernel")
    found = verdict(life.adapter_matches_base, {"adapter_problems": ["base name differs"]})
    assert found.startswith("[An adapter belongs to one base: ")
    assert "`adapter_problems` is not a function" in found
    assert "Fix: def adapter_problems(base, adapter_dir)" in found


def test_a_function_that_answers_by_call_count_cannot_tell_which_call_is_which(hidden_check, monkeypatch):
    """Found by red-teaming: the check asked its three cases in a fixed order, so a function that flagged its n-th
    call passed. Now the own base is asked twice, all in an order nobody knows in advance: of the 12 orders, such a
    function passes in 3 (a guess), an honest one in all 12."""
    import itertools

    import torch

    from labutils.models import ensure_tiny_model

    life = hidden_check("lab08_adapter_life.kernel")
    model_id = str(ensure_tiny_model("causal_lm"))
    from transformers import AutoModelForCausalLM

    own = next(
        iter(AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.bfloat16).parameters())
    ).detach()

    def honest(base, adapter_dir):
        if base.config._name_or_path != model_id:
            return ["the name differs"]
        return [] if torch.equal(next(iter(base.parameters())).detach(), own) else ["other weights"]

    def counting(base, adapter_dir):
        calls.append(1)
        if base.config._name_or_path != model_id:
            return ["the name differs"]
        return ["other weights"] if len(calls) == 2 else []

    passed = {"honest": 0, "counting": 0}
    orders = sorted(set(itertools.permutations([0, 0, 1, 2])))
    for order in orders:

        class Fixed:
            def shuffle(self, cases, order=order):
                by_kind = {}
                for case in cases:
                    by_kind.setdefault(case[0], []).append(case)
                kinds = ["own base", "another checkpoint, same name", "same weights, another name"]
                cases[:] = [by_kind[kinds[k]].pop() for k in order]

        monkeypatch.setattr(life.random, "SystemRandom", Fixed)
        ns = {"MODEL": model_id, "ADAPTER_DIR": "unused", "DTYPE": torch.bfloat16}
        for name, function in (("honest", honest), ("counting", counting)):
            calls = []
            try:
                life.adapter_matches_base(ns | {"adapter_problems": function})
                passed[name] += 1
            except AssertionError:
                pass
    assert len(orders) == 12 and passed == {"honest": 12, "counting": 3}
