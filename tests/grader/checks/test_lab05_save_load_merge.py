"""Lab 05's checks (grader/checks/lab05_save_load_merge/): the on-disk checks (files.py) on hand-written safetensors
files, no torch; the kernel checks (kernel.py) and the grader's own merge (files.deploy_matches_adapter) on the
course's tiny Llama, with a "trained" adapter whose lora_B is set by hand (no training)."""

from __future__ import annotations

import copy
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from peft_grader import nbcourse


@pytest.fixture
def deploy_files(hidden_check):
    return hidden_check("lab05_save_load_merge.files")


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], bytes]]) -> None:
    """A real safetensors file: 8-byte header length, JSON header, raw bytes."""
    header, body = {"__metadata__": {"format": "pt"}}, b""
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(body), len(body) + len(data)]}
        body += data
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)


def lora(trained: bool = True) -> dict:
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    b = b"\x01\x00\x00\x00" if trained else bytes(4)
    return {
        f"{prefix}.lora_A.weight": ("F32", [1, 1], b"\x01\x00\x00\x00"),
        f"{prefix}.lora_B.weight": ("F32", [1, 1], b),
    }


def plain(dtype: str = "BF16") -> dict:
    return {"model.layers.0.self_attn.q_proj.weight": (dtype, [1, 1], bytes(2 if dtype == "BF16" else 1))}


def lab(tmp_path: Path, *, adapter=None, deploy=None, deploy_config=None, extra=None) -> dict:
    """A lab-05 output folder as a saving sequence would leave it; returns the namespace the checks get."""
    out = tmp_path / "lab05-output"
    adapter_dir, deploy_dir = out / "adapter", out / "deploy"
    adapter_dir.mkdir(parents=True)
    (adapter_dir / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 32}))
    write_safetensors(adapter_dir / "adapter_model.safetensors", adapter or lora())
    if deploy is not None:
        (deploy_dir).mkdir()
        (deploy_dir / "config.json").write_text(json.dumps(deploy_config or {"model_type": "llama"}))
        write_safetensors(deploy_dir / "model.safetensors", deploy)
        (deploy_dir / "tokenizer_config.json").write_text("{}")  # tokenizer.save_pretrained(DEPLOY_DIR)
    for relative, tensors in (extra or {}).items():
        write_safetensors(out / relative, tensors)
        (out / relative).with_name("config.json").write_text("{}")
    return {"OUTPUT_DIR": out, "ADAPTER_DIR": adapter_dir, "DEPLOY_DIR": deploy_dir}


def test_reference_layout_passes(deploy_files, tmp_path):
    ns = lab(tmp_path, deploy=plain())
    deploy_files.adapter_only_saved(ns)
    deploy_files.deploy_copy_saved(ns)


def test_a_deployment_copy_without_its_tokenizer_is_named(deploy_files, tmp_path, verdict):
    ns = lab(tmp_path, deploy=plain())
    (ns["DEPLOY_DIR"] / "tokenizer_config.json").unlink()
    message = verdict(deploy_files.deploy_copy_saved, ns)
    assert (
        message.startswith("[Merge only to deploy") and "holds the merged model but no tokenizer" in message
    )


def test_adapter_check_passes_before_the_deploy_copy_exists(deploy_files, tmp_path):
    deploy_files.adapter_only_saved(lab(tmp_path))


@pytest.mark.parametrize(
    ("extra", "adapter_fails", "deploy_fails"),
    [
        # get_base_model().save_pretrained: wrapped-base keys, not a merged copy
        (
            {"base/model.safetensors": {"model.layers.0.q_proj.base_layer.weight": ("BF16", [1], bytes(2))}},
            True,
            False,
        ),
        ({"adapter/model.safetensors": plain()}, True, True),  # merged model saved into the adapter folder
        ({"merged/model.safetensors": plain()}, True, True),  # a second merged copy elsewhere
    ],
)
def test_full_weights_outside_deploy_dir(deploy_files, tmp_path, extra, adapter_fails, deploy_fails):
    ns = lab(tmp_path, deploy=plain(), extra=extra)
    for check, fails in (
        (deploy_files.adapter_only_saved, adapter_fails),
        (deploy_files.deploy_copy_saved, deploy_fails),
    ):
        if fails:
            with pytest.raises(AssertionError, match="Mistake 4"):
                check(ns)
        else:
            check(ns)


def test_untrained_adapter_fails(deploy_files, tmp_path):
    with pytest.raises(AssertionError, match="never trained"):
        deploy_files.adapter_only_saved(lab(tmp_path, adapter=lora(trained=False)))


@pytest.mark.parametrize(
    ("deploy", "config", "match"),
    [
        (None, None, "holds no saved model"),
        (plain("U8"), None, "quantized base"),
        (
            plain(),
            {"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}},
            "quantized base",
        ),
        (lora(), None, "not merged"),
    ],
)
def test_bad_deploy_copy(deploy_files, tmp_path, deploy, config, match):
    ns = lab(tmp_path, deploy=deploy, deploy_config=config)
    with pytest.raises(AssertionError, match=match):
        deploy_files.deploy_copy_saved(ns)


def test_fp32_deploy_copy_is_accepted(deploy_files, tmp_path):
    deploy_files.deploy_copy_saved(lab(tmp_path, deploy=plain("F32")))


def test_outside_runner_uses_the_lab_paths(tmp_path):
    lab(tmp_path, deploy=plain("U8"))
    proc = subprocess.run(
        [sys.executable, "-m", "checks.outside", "05_save_load_merge", str(tmp_path)],
        env={"PYTHONPATH": str(nbcourse.GRADER)},
        capture_output=True,
        text=True,
        check=True,
    )
    verdicts = json.loads(proc.stdout)
    assert verdicts["test_adapter_only"] == ""
    assert "quantized base" in verdicts["test_deploy_copy"]


def test_unreadable_deploy_weights_are_named(deploy_files, tmp_path, verdict):
    ns = lab(tmp_path, deploy=plain())
    (ns["DEPLOY_DIR"] / "model.safetensors").write_bytes(b"\xff" * 12)
    message = verdict(deploy_files.deploy_copy_saved, ns)
    assert "Merge only to deploy" in message and "not a safetensors file" in message


def test_adapter_saved_as_the_deploy_copy_is_named(deploy_files, tmp_path, verdict):
    ns = lab(tmp_path)
    ns["DEPLOY_DIR"].mkdir()
    (ns["DEPLOY_DIR"] / "adapter_config.json").write_text(json.dumps({"r": 16}))
    message = verdict(deploy_files.deploy_copy_saved, ns)
    assert "Merge only to deploy" in message and "holds an adapter, not a merged model" in message


# ---- on the tiny Llama: kernel.py and files.deploy_matches_adapter ----------------------------------------


def small_llama():
    """A one-layer Llama far smaller than the course's: another model, built in milliseconds."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return LlamaForCausalLM(config)


def lora_on(model, trained: bool = True):
    """get_peft_model with LoRA on q_proj and v_proj; `trained`: lora_B set non-zero by hand, as training leaves it."""
    import torch
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    if trained:
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.05)
    return peft_model


@pytest.fixture(scope="module")
def lab05(tmp_path_factory):
    """The lab's reference sequence on the course's tiny Llama (bf16): a "trained" adapter saved to ADAPTER_DIR,
    reloaded onto a fresh base, and merged into another fresh base saved to DEPLOY_DIR."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from labutils.models import ensure_tiny_model

    model_id = str(ensure_tiny_model("causal_lm"))

    def base():
        return AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.bfloat16)

    out = tmp_path_factory.mktemp("lab05-output")
    adapter_dir, deploy_dir = out / "adapter", out / "deploy"
    torch.manual_seed(0)
    model = lora_on(base())
    model.save_pretrained(adapter_dir)
    reloaded = PeftModel.from_pretrained(base(), adapter_dir)
    merged = PeftModel.from_pretrained(base(), adapter_dir).merge_and_unload()
    merged.save_pretrained(deploy_dir)
    return {
        "MODEL": model_id,
        "ADAPTER_DIR": adapter_dir,
        "DEPLOY_DIR": deploy_dir,
        "model": model,
        "reloaded": reloaded,
        "merged": merged,
    }


@pytest.fixture
def kernel(hidden_check):
    return hidden_check("lab05_save_load_merge.kernel")


def test_reference_reload_and_merge_pass(kernel, lab05, verdict):
    assert verdict(kernel.reload_equal, lab05) == ""
    assert verdict(kernel.merged_outputs, lab05) == ""


def _another_adapter(reloaded):
    other = copy.deepcopy(reloaded)
    for name, param in other.named_parameters():
        if "lora_B" in name:
            param.data.mul_(-1)
    return other


def _disabled(reloaded):
    other = copy.deepcopy(reloaded)
    other.base_model.disable_adapter_layers()
    return other


def _other_alpha(reloaded):
    other = copy.deepcopy(reloaded)
    other.peft_config["default"].lora_alpha *= 2
    return other


def _other_base_weight(reloaded):
    other = copy.deepcopy(reloaded)
    with torch_no_grad():
        other.get_base_model().model.norm.weight.mul_(2)
    return other


def torch_no_grad():
    import torch

    return torch.no_grad()


@pytest.mark.parametrize(
    ("make_reloaded", "words"),
    [
        (lambda lab: lab["merged"], "`reloaded` is a plain LlamaForCausalLM"),
        (lambda lab: lab["model"], "shares its weights with the trained `model`"),
        (lambda lab: lora_on(small_llama(), trained=False), "carries a NEW, untrained adapter"),
        (lambda lab: lora_on(small_llama()), "is not the one saved in"),
        (lambda lab: copy.deepcopy(lab["reloaded"]).float(), "loaded in another precision"),
        (lambda lab: _another_adapter(lab["reloaded"]), "not the saved adapter on the same base"),
        (lambda lab: _other_alpha(lab["reloaded"]), "lora_alpha: 16 loaded, 8 saved"),
        (lambda lab: _other_base_weight(lab["reloaded"]), "is not a fresh copy of the course model"),
        (lambda lab: _disabled(lab["reloaded"]), "(adapter disabled)"),
        # a copy of the trained model holds exactly the saved values, but was never loaded from the files
        (lambda lab: copy.deepcopy(lab["model"]), "was not loaded from the saved files"),
    ],
    ids=[
        "merged",
        "the_trained_model",
        "new_adapter",
        "another_model",
        "float32_base",
        "another_adapter",
        "another_alpha",
        "another_base_weight",
        "adapter_disabled",
        "deepcopy_of_the_trained_model",
    ],
)
def test_each_wrong_reload_is_named(kernel, lab05, verdict, make_reloaded, words):
    message = verdict(kernel.reload_equal, lab05 | {"reloaded": make_reloaded(lab05)})
    assert message.startswith("[For inference, load the saved adapter onto a fresh base") and words in message


def _base(model_id):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.bfloat16)


@pytest.mark.parametrize(
    "make_reloaded",
    [
        lambda lab: lab["reloaded"],
        lambda lab: _peft().PeftModel.from_pretrained(
            _base(lab["MODEL"]), lab["ADAPTER_DIR"], is_trainable=True
        ),
        lambda lab: _peft().PeftModel.from_pretrained(_base(lab["MODEL"]), str(lab["ADAPTER_DIR"])).eval(),
        lambda lab: _peft().PeftModel.from_pretrained(_base(lab["MODEL"]), lab["ADAPTER_DIR"]).train(),
        lambda lab: _peft().AutoPeftModelForCausalLM.from_pretrained(str(lab["ADAPTER_DIR"])),
        lambda lab: _peft().PeftModel.from_pretrained(
            _base(lab["MODEL"]), lab["ADAPTER_DIR"], adapter_name="mine"
        ),
    ],
    ids=[
        "reference",
        "is_trainable",
        "str_path_eval",
        "train_mode",
        "auto_peft_model",
        "adapter_name",
    ],
)
def test_every_honest_reload_passes(kernel, lab05, verdict, make_reloaded):
    assert verdict(kernel.reload_equal, lab05 | {"reloaded": make_reloaded(lab05)}) == ""


def _peft():
    import peft

    return peft


def _trained_further(model):
    """The trained model after more training steps than the saved adapter holds (lora_B moved by hand)."""
    import torch

    further = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in further.named_parameters():
            if "lora_B" in name:
                param.add_(0.01)
    return further


def test_a_reload_of_an_adapter_saved_before_training_ended_fails(kernel, lab05, verdict):
    """The adapter saved, then training went on: the honest reload of that stale adapter, or a copy of the model
    (which matches the model, not the files), both fail; the verdict rests on the files and the trained model."""
    further = _trained_further(lab05["model"])
    for reloaded in (lab05["reloaded"], copy.deepcopy(further)):
        message = verdict(kernel.reload_equal, lab05 | {"model": further, "reloaded": reloaded})
        assert "is not the trained model's adapter as it is now" in message


def test_no_hook_of_the_learners_objects_runs_in_the_check(kernel, lab05, verdict):
    """A forward hook on `reloaded` that answers with the trained model's outputs (over a reload of a stale
    adapter) never runs inside the check, and a hook that would fail the honest reload never runs either."""

    calls = []

    def answer_for_it(module, args, kwargs, output):
        calls.append(module)
        return lab05["model"](*args, **kwargs)

    def explode(module, args):
        calls.append(module)
        raise RuntimeError("a learner's hook ran inside the check")

    further = _trained_further(lab05["model"])
    stale = _peft().PeftModel.from_pretrained(_base(lab05["MODEL"]), lab05["ADAPTER_DIR"])
    stale.register_forward_hook(answer_for_it, with_kwargs=True)
    message = verdict(kernel.reload_equal, lab05 | {"model": further, "reloaded": stale})
    assert "is not the trained model's adapter as it is now" in message
    honest = _peft().PeftModel.from_pretrained(_base(lab05["MODEL"]), lab05["ADAPTER_DIR"])
    honest.register_forward_pre_hook(explode)
    lab05["model"].register_forward_pre_hook(explode)
    try:
        assert verdict(kernel.reload_equal, lab05 | {"reloaded": honest}) == ""
    finally:
        lab05["model"]._forward_pre_hooks.clear()
    assert calls == []


def test_an_adapter_saved_with_lora_A_zeroed_is_not_the_trained_one(
    kernel, deploy_files, lab05, verdict, tmp_path
):
    """lora_A zeroed in the saved file (update B·A = 0) beside a trained lora_B: the reload check finds it is not the
    trained model's adapter, the adapter check finds it changes nothing, and a deployment copy that is the bare base
    is not accepted as its merge (the error 0 would be within 10% of an update of 0)."""
    import torch

    zeroed = copy.deepcopy(lab05["model"])
    with torch.no_grad():
        for name, param in zeroed.named_parameters():
            if "lora_A" in name:
                param.zero_()
    adapter_dir = tmp_path / "adapter"
    zeroed.save_pretrained(adapter_dir)
    message = verdict(
        kernel.reload_equal, lab05 | {"ADAPTER_DIR": adapter_dir, "reloaded": copy.deepcopy(lab05["model"])}
    )
    assert "is not the trained model's adapter as it is now" in message
    message = verdict(
        deploy_files.adapter_only_saved, {"ADAPTER_DIR": adapter_dir, "DEPLOY_DIR": tmp_path / "deploy"}
    )
    assert "update B·A is zero in every layer" in message
    message = verdict(
        deploy_files.deploy_matches_adapter, {"ADAPTER_DIR": adapter_dir, "DEPLOY_DIR": Path(lab05["MODEL"])}
    )
    assert "Merge only to deploy" in message and "changes nothing when merged" in message
    # the grader's own merge of the real adapter still accepts the real deployment copy
    assert verdict(deploy_files.deploy_matches_adapter, lab05) == ""


@pytest.mark.parametrize(
    "make_merged",
    [lambda lab: lab["reloaded"], lambda lab: lab["reloaded"].get_base_model()],
    ids=["peft_model", "base_model_with_lora_layers"],
)
def test_unmerged_model_is_named(kernel, lab05, verdict, make_merged):
    message = verdict(kernel.merged_outputs, lab05 | {"merged": make_merged(lab05)})
    assert "Merge only to deploy" in message and "still carries LoRA layers" in message


def test_merge_into_a_quantized_base_is_named(kernel, lab05, verdict, monkeypatch):
    """A merge into a 4-bit base keeps the base's quantization_config (set here by hand: no bitsandbytes on CPU)."""
    monkeypatch.setattr(
        lab05["merged"].config, "quantization_config", {"quant_method": "bitsandbytes"}, raising=False
    )
    message = verdict(kernel.merged_outputs, lab05)
    assert "Merge only to deploy" in message and "merged into a quantized (4-bit or 8-bit) base" in message


def test_missing_or_quantized_deploy_folder_is_named(kernel, lab05, verdict, tmp_path):
    message = verdict(kernel.merged_outputs, lab05 | {"DEPLOY_DIR": tmp_path / "deploy"})
    assert "Merge only to deploy" in message and "holds no saved model" in message
    quantized = tmp_path / "quantized"
    quantized.mkdir()
    config = {"model_type": "llama", "quantization_config": {"quant_method": "bitsandbytes"}}
    (quantized / "config.json").write_text(json.dumps(config))
    message = verdict(kernel.merged_outputs, lab05 | {"DEPLOY_DIR": quantized})
    assert "Merge only to deploy" in message and f"the model saved in {quantized} is quantized" in message


def test_deploy_copy_of_the_saved_adapter_matches_the_graders_merge(deploy_files, lab05, verdict):
    assert verdict(deploy_files.deploy_matches_adapter, lab05) == ""


def _deploy_without_config(lab: dict, folder: Path) -> Path:
    """The merged weights without their config.json."""
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(lab["DEPLOY_DIR"] / "model.safetensors")
    return folder


def _deploy_of_another_model(lab: dict, folder: Path) -> Path:
    """A loadable Llama that is not the course model: one layer, other sizes."""
    small_llama().save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("paths", "words"),
    [
        (lambda lab, tmp: {"ADAPTER_DIR": tmp}, "holds no adapter to compare the deployment copy with"),
        (lambda lab, tmp: {"DEPLOY_DIR": tmp}, "holds no safetensors weights"),
        (lambda lab, tmp: {"DEPLOY_DIR": _deploy_without_config(lab, tmp / "d")}, "does not load ("),
        (
            lambda lab, tmp: {"DEPLOY_DIR": _deploy_of_another_model(lab, tmp / "d")},
            "not the course model merged (e.g. model.layers.1.",
        ),
        # the course's base itself, saved unmerged: off by exactly the adapter's update
        (lambda lab, tmp: {"DEPLOY_DIR": Path(lab["MODEL"])}, "by 100% of the adapter's update"),
    ],
    ids=["no_adapter", "no_weights", "no_config", "another_model", "unmerged_base"],
)
def test_each_wrong_deploy_copy_is_named(deploy_files, lab05, verdict, tmp_path, paths, words):
    message = verdict(deploy_files.deploy_matches_adapter, lab05 | paths(lab05, tmp_path))
    assert "Merge only to deploy" in message and words in message


def test_the_saved_adapter_is_judged_on_the_model_the_lab_measured(
    kernel, lab05, verdict, monkeypatch, hidden_check
):
    """What the kernel guard recorded after the locked cell example_logits (RECORDS in __init__.py): the saved file
    must hold that model's adapter, so a `model` rebound afterwards to a reload of a stale file does not stand in for
    the trained one. A kernel restarted after a crash recorded nothing to judge; a record the guard could not read
    fails closed."""
    evidence = hidden_check("evidence")
    further = _trained_further(lab05["model"])
    decoy = _peft().PeftModel.from_pretrained(_base(lab05["MODEL"]), lab05["ADAPTER_DIR"])
    for record, rebound, words in (
        (evidence._adapter_state(lab05["model"]), lab05["model"], ""),
        (
            evidence._adapter_state(further),
            decoy,
            "differs from the model the locked cell example_logits measured",
        ),
        ({"restarted": True}, decoy, ""),
        ({"unrecorded": "TypeError: not a PeftModel"}, lab05["model"], "could not be recorded"),
    ):
        monkeypatch.setattr(evidence, "notebook_records", {"example_logits": {"trained": record}})
        message = verdict(kernel.reload_equal, lab05 | {"model": rebound})
        assert words in message if words else message == ""


def test_an_unreadable_adapter_or_another_base_is_named(kernel, lab05, verdict, tmp_path):
    """The reload is judged on the files and the base: an adapter file that cannot be read, and a reload whose base
    has parameters the trained model's base has not, are each named."""
    import shutil

    import torch

    broken = tmp_path / "broken"
    shutil.copytree(lab05["ADAPTER_DIR"], broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    message = verdict(kernel.reload_equal, lab05 | {"ADAPTER_DIR": broken})
    assert "holds no readable adapter" in message
    other = _peft().PeftModel.from_pretrained(_base(lab05["MODEL"]), lab05["ADAPTER_DIR"])
    other.base_model.model.model.register_parameter("extra", torch.nn.Parameter(torch.zeros(1)))
    message = verdict(kernel.reload_equal, lab05 | {"reloaded": other})
    assert "is not the adapter on the course's base model" in message
