"""Lab 06's checks (grader/checks/lab06_task_heads/): the on-disk check (files.py) on hand-written adapter folders and
the judges (judges.py) on hand-made manifests, no torch; the kernel checks (kernel.py) on the course's tiny BERT
classifier, "trained" by hand (lora_B set non-zero, the head fitted in closed form: no training loop)."""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path

import pytest

LORA = "base_model.model.bert.encoder.layer.0.attention.self.query"


@pytest.fixture
def head_files(hidden_check):
    return hidden_check("lab06_task_heads.files")


def write_adapter(folder: Path, names: list[str], config: dict | None = None) -> Path:
    """An adapter folder: adapter_config.json and a real safetensors file holding `names` (one F32 each)."""
    header, body = {"__metadata__": {"format": "pt"}}, b""
    for name in names:
        header[name] = {"dtype": "F32", "shape": [1], "data_offsets": [len(body), len(body) + 4]}
        body += b"\x00\x00\x80\x3f"
    raw = json.dumps(header).encode()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    (folder / "adapter_config.json").write_text(json.dumps(config or {"r": 8, "peft_type": "LORA"}))
    return folder


def lora_names() -> list[str]:
    return [f"{LORA}.lora_A.weight", f"{LORA}.lora_B.weight"]


def folder_verdict(check, folder: Path) -> str:
    try:
        check({"ADAPTER_DIR": folder, "OUTPUT_DIR": folder.parent})
    except AssertionError as err:
        return str(err)
    return ""


def test_adapter_with_the_head_passes(head_files, tmp_path):
    folder = write_adapter(
        tmp_path / "adapter",
        [*lora_names(), "base_model.model.classifier.weight", "base_model.model.classifier.bias"],
    )
    assert folder_verdict(head_files.head_saved, folder) == ""


def test_decoder_score_head_passes(head_files, tmp_path):
    folder = write_adapter(tmp_path / "adapter", [*lora_names(), "base_model.model.score.weight"])
    assert folder_verdict(head_files.head_saved, folder) == ""


@pytest.mark.parametrize(
    "extra",
    [[], ["base_model.model.classifier.weight"], ["base_model.model.classifier.lora_A.weight"]],
    ids=["lora_only", "weight_without_bias", "lora_on_head"],
)
def test_adapter_without_the_head_is_mistake_5(head_files, tmp_path, extra):
    message = folder_verdict(
        head_files.head_saved, write_adapter(tmp_path / "adapter", [*lora_names(), *extra])
    )
    assert "Mistake 5" in message and "modules_to_save" in message and "Fix:" in message


def test_missing_or_broken_adapter_fails_with_a_fix(head_files, tmp_path):
    assert "Fix:" in folder_verdict(head_files.head_saved, tmp_path / "nothing")
    folder = write_adapter(tmp_path / "adapter", lora_names())
    (folder / "adapter_model.safetensors").write_bytes(b"\xff" * 12)
    assert "not a safetensors file" in folder_verdict(head_files.head_saved, folder)
    full = tmp_path / "full"
    full.mkdir()
    (full / "config.json").write_text("{}")
    (full / "model.safetensors").write_bytes(b"")
    message = folder_verdict(head_files.head_saved, full)  # a merged model saved where the adapter belongs
    assert (
        message.startswith("[Mistake 4: ")
        and "holds a whole model (config.json, model.safetensors) and no adapter" in message
    )


def test_outside_verdicts_run_without_torch(tmp_path, outside):
    """The fresh-process re-check of lab 06 reads the lab's own path constants and imports no torch; the
    checks it judges from the notebook's records fail closed when there is no notebook."""
    write_adapter(tmp_path / "heads-output" / "adapter", lora_names())
    found, torch_imported = outside("06_task_heads", tmp_path)
    assert not torch_imported
    assert "Mistake 5" in found["test_head_saved"]
    assert (
        found["test_lora_config"].startswith("could not be verified") and "Fix:" in found["test_lora_config"]
    )


def test_full_weights_beside_the_adapter_are_mistake_4(head_files, tmp_path):
    folder = write_adapter(
        tmp_path / "out" / "adapter",
        [*lora_names(), "base_model.model.classifier.weight", "base_model.model.classifier.bias"],
    )
    merged = tmp_path / "out" / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    message = folder_verdict(head_files.head_saved, folder)
    assert "Mistake 4" in message and "model weights were saved beside the adapter" in message
    assert "merged/config.json" in message


def test_adapter_config_without_weights_is_named(head_files, tmp_path):
    folder = write_adapter(tmp_path / "adapter", lora_names())
    (folder / "adapter_model.safetensors").unlink()
    message = folder_verdict(head_files.head_saved, folder)
    assert (
        message.startswith("[A saved adapter reloads onto a fresh base")
        and "has no adapter_model.safetensors" in message
    )


def test_head_saved_without_lora_matrices_is_named(head_files, tmp_path):
    folder = write_adapter(
        tmp_path / "adapter", ["base_model.model.classifier.weight", "base_model.model.classifier.bias"]
    )
    message = folder_verdict(head_files.head_saved, folder)
    assert (
        message.startswith("[A saved adapter reloads onto a fresh base")
        and "holds no LoRA matrices" in message
    )


# ---- judges.py on hand-made manifests --------------------------------------------------------------------

# The tiny BERT's modules that hold weights, (in, out) features: its embeddings, one encoder layer, the pooler.
BERT_MODULES = {"embeddings.word_embeddings": (4096, 128), "encoder.layer.0.attention.self.query": (128, 128),
                "encoder.layer.0.attention.self.key": (128, 128), "encoder.layer.0.attention.self.value": (128, 128),
                "encoder.layer.0.attention.output.dense": (128, 128), "encoder.layer.0.intermediate.dense": (128, 512),
                "encoder.layer.0.output.dense": (512, 128), "pooler.dense": (128, 128)}  # fmt: skip
# LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["query", "key", "value"]).to_dict(),
# the fields the judges read and a few beside them (peft keeps target_modules as a set: the record sorts it).
SEQ_CLS = {"task_type": "SEQ_CLS", "peft_type": "LORA", "r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
           "bias": "none", "target_modules": ["key", "query", "value"], "modules_to_save": ["classifier", "score"]}  # fmt: skip
NO_TASK = {"task_type": None, "modules_to_save": None}  # LoraConfig(r=8, ...) without task_type
PEFT_TYPES = {"SEQ_CLS": "PeftModelForSequenceClassification", "CAUSAL_LM": "PeftModelForCausalLM"}


def bert(
    *, lora=("query", "key", "value"), head="classifier", head_saved=True, frozen=(), config=None, peft=True
):
    """A manifest of the course's tiny BERT classifier (one encoder layer shown) as checks.inspect_model.manifest
    writes it: wrapped by get_peft_model with LoRA (r=8) on the `lora` leaves and `config`'s changes to SEQ_CLS;
    the head `head` (None: a BertModel, which has none) in modules_to_save when `head_saved`, `frozen` naming
    parameters of its trainable copy that were frozen. `peft=False`: never wrapped."""
    prefix = "base_model.model." if peft else ""
    body = "bert." if head else ""
    modules, parameters = {"": ""}, {}
    for path, (fan_in, fan_out) in BERT_MODULES.items():
        name = prefix + body + path
        wrapped = peft and path.rsplit(".", 1)[-1] in lora
        base = f"{name}.base_layer" if wrapped else name
        modules[name], modules[base] = ("lora" if wrapped else ""), ""
        parameters[f"{base}.weight"] = ["bfloat16", False, fan_in * fan_out, False]
        if "embeddings" not in path:
            parameters[f"{base}.bias"] = ["bfloat16", False, fan_out, False]
        if wrapped:
            for ab, size in (("lora_A", 8 * fan_in), ("lora_B", fan_out * 8)):
                modules[f"{name}.{ab}.default"] = ""
                parameters[f"{name}.{ab}.default.weight"] = ["float32", True, size, False]
    if head:
        wrapped = peft and head in lora
        saved = peft and head_saved and not wrapped
        modules[prefix + head] = "lora" if wrapped else "modules_to_save" if saved else ""
        copies = {"original_module": False, "modules_to_save.default": True} if saved else {"": False}
        for copy_name, trainable in copies.items():
            module = f"{prefix}{head}.{copy_name}".rstrip(".")
            modules.setdefault(module, "")
            for param, size in (("weight", 128 * 2), ("bias", 2)):
                parameters[f"{module}.{param}"] = ["bfloat16", trainable and param not in frozen, size, False]
    config = SEQ_CLS | (config or {})
    base_type = "BertForSequenceClassification" if head else "BertModel"
    trainable = sum(n for _, grad, n, _ in parameters.values() if grad)
    return {
        "type": f"peft.peft_model.{PEFT_TYPES.get(config['task_type'], 'PeftModel')}"
        if peft
        else f"transformers.models.bert.modeling_bert.{base_type}",
        "base_type": base_type,
        "model_type": "bert",
        "peft": peft,
        "active_adapter": "default" if peft else None,
        "base_prefix": prefix,
        "base_children": ["bert", "dropout", head] if head else ["embeddings", "encoder", "pooler"],
        "modules": modules,
        "linear4bit": {},
        "parameters": parameters,
        "gradient_checkpointing": False,
        "trainable_total": [trainable, sum(n for _, _, n, _ in parameters.values())] if peft else None,
        "peft_config": {"default": config} if peft else {},
        "lora_config_targets": None,
    }


@pytest.fixture
def judges(hidden_check):
    return hidden_check("lab06_task_heads.judges")


def test_reference_manifest_passes_both_judges(judges, verdict):
    assert verdict(judges.bert_lora_config, bert()) == ""
    assert verdict(judges.head_wrapped, bert()) == ""
    # the attention output is optional (labutils.facts.ATTENTION["bert"], the rule lab 02 checks too)
    attention_output = bert() | {"modules": {**bert()["modules"]}}
    for name in [n for n in attention_output["modules"] if n.endswith("attention.output.dense")]:
        attention_output["modules"][name] = "lora"
    assert verdict(judges.bert_lora_config, attention_output) == ""


@pytest.mark.parametrize(
    ("record", "rule", "words"),
    [
        (
            bert(peft=False) | {"lora_config_targets": ["q_proj", "v_proj"]},
            "Mistake 1",
            "(those are Llama names)",
        ),
        (
            bert(lora=("query",)),
            "Mistake 1",
            "(key, value missing; target_modules was ['key', 'query', 'value'])",
        ),
        (
            bert(lora=("query", "value"))
            | {"peft_config": {"default": SEQ_CLS | {"target_modules": ["query", "value"]}}},
            "Mistake 1",
            "(key missing; target_modules was ['query', 'value'])",
        ),
        (
            bert(lora=("query", "key", "value", "dense")),
            "Mistake 1",
            "which are not BERT's attention projections (a `dense` outside attention.output is the MLP or the pooler)",
        ),
        (
            bert(head=None, config=NO_TASK),
            "Mistake 5",
            "PeftModel has no classification head (no `classifier` or `score`)",
        ),
        (
            bert(lora=("query", "key", "value", "classifier")),
            "Mistake 5",
            "LoRA wraps the head (base_model.model.classifier)",
        ),
        (
            bert(lora=("query", "key", "value", "word_embeddings")),
            "Mistake 1",
            "also wraps base_model.model.bert.embeddings.word_embeddings, which are not BERT's attention projections",
        ),
    ],
    ids=[
        "llama_targets",
        "key_value_missing",
        "key_missing",
        "dense_too_loose",
        "no_head",
        "lora_on_the_head",
        "lora_on_embeddings",
    ],
)
def test_lora_config_judge_names_each_wrong_config(judges, verdict, record, rule, words):
    message = verdict(judges.bert_lora_config, record)
    assert message.startswith(f"[{rule}:") and words in message


@pytest.mark.parametrize(
    ("record", "words"),
    [
        (bert(peft=False), "`model` is not a PeftModel, so nothing decides what happens to the head"),
        (bert(head=None, config=NO_TASK), "has no classification head"),
        (
            bert(head_saved=False, config=NO_TASK),
            "`classifier` is not in modules_to_save (the config sets no task_type and no modules_to_save)",
        ),
        (
            bert(head_saved=False, config={"task_type": "CAUSAL_LM", "modules_to_save": None}),
            "(task_type='CAUSAL_LM' adds no head to modules_to_save)",
        ),
        (bert(frozen=("weight",)), "the head's trainable copy has frozen parameters (weight)"),
    ],
    ids=["not_peft", "no_head", "no_task_type", "causal_lm_task", "frozen_copy"],
)
def test_head_judge_names_each_way_the_head_is_not_trained(judges, verdict, record, words):
    message = verdict(judges.head_wrapped, record)
    assert message.startswith("[Mistake 5: Missing modules_to_save") and words in message


# ---- kernel.py on the tiny BERT classifier -----------------------------------------------------------------


def fit_head(model, model_id: str) -> None:
    """Set the head's trainable copy in closed form: a ridge regression of +-1 targets on the pooled features of the
    training split (through the LoRA layers). A head well above chance without a training loop."""
    import torch
    from transformers import AutoTokenizer

    from labutils.data import load_sentiment

    train = load_sentiment()["train"]
    batch = AutoTokenizer.from_pretrained(model_id)(
        list(train["text"]), padding=True, truncation=True, max_length=64, return_tensors="pt"
    )
    with torch.no_grad():
        features = model.get_base_model().bert(**batch).pooler_output.float()
        x = torch.cat([features, torch.ones(len(features), 1)], 1)
        y = torch.nn.functional.one_hot(torch.tensor(list(train["label"])), 2).float() * 2 - 1
        w = torch.linalg.solve(x.T @ x + 1e-2 * torch.eye(x.shape[1]), x.T @ y)
        head = model.get_base_model().classifier.modules_to_save["default"]
        head.weight.copy_(w[:-1].T)
        head.bias.copy_(w[-1])


def set_lora_b(model, std: float) -> None:
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name and std:
                param.normal_(std=std)
            elif "lora_B" in name:
                param.zero_()


@pytest.fixture(scope="module")
def lab06(tmp_path_factory):
    """The lab on the course's tiny BERT (bf16): a SEQ_CLS adapter "trained" by hand and saved with its head, its
    reload onto a fresh base; beside them, an untrained SEQ_CLS adapter, and a trained one without task_type whose
    head stays frozen outside modules_to_save, saved to adapter-without-head."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from labutils.models import ensure_tiny_model

    model_id = str(ensure_tiny_model("classifier"))

    def base():
        return AutoModelForSequenceClassification.from_pretrained(model_id, dtype=torch.bfloat16)

    def wrap(task_type):
        config = LoraConfig(
            task_type=task_type,
            r=8,
            lora_alpha=16,
            lora_dropout=0.0,
            target_modules=["query", "key", "value"],
        )
        return get_peft_model(base(), config).eval()

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("heads-output")
    model, frozen_head = wrap("SEQ_CLS"), wrap(None)
    for peft_model in (model, frozen_head):
        set_lora_b(peft_model, std=0.02)
    fit_head(model, model_id)
    model.save_pretrained(out / "adapter")
    frozen_head.save_pretrained(out / "adapter-without-head")
    return {
        "MODEL": model_id,
        "OUTPUT_DIR": out,
        "ADAPTER_DIR": out / "adapter",
        "model": model,
        "reloaded": PeftModel.from_pretrained(base(), out / "adapter"),
        "untrained": wrap("SEQ_CLS"),
        "frozen_head": frozen_head,
        "base": base,
    }


@pytest.fixture
def kernel(hidden_check):
    return hidden_check("lab06_task_heads.kernel")


def test_reference_notebook_passes_every_check(kernel, lab06, verdict):
    for check in (
        kernel.lora_config,
        kernel.head_wrapped,
        kernel.trained,
        kernel.accuracy,
        kernel.reload,
        kernel.head_saved,
    ):
        assert verdict(check, lab06) == "", check.__name__


def test_hand_made_manifest_is_shaped_like_the_real_one(hidden_check, lab06):
    """The judges' records above agree with checks.inspect_model.manifest on the real wrapped model."""
    manifest, plain = hidden_check("inspect_model").manifest, hidden_check("evidence").plain
    real = json.loads(json.dumps(plain(manifest(lab06["model"]))))
    hand = bert()
    assert set(hand) == set(real)
    for key in ("type", "base_type", "model_type", "peft", "active_adapter", "base_prefix", "base_children"):
        assert hand[key] == real[key], key
    assert {name: real["modules"][name] for name in hand["modules"]} == hand["modules"]
    assert {name: real["parameters"][name] for name in hand["parameters"]} == hand["parameters"]
    assert hand["peft_config"]["default"].items() <= real["peft_config"]["default"].items()


def test_head_left_out_of_modules_to_save_is_named_on_the_real_model(kernel, lab06, verdict):
    message = verdict(kernel.head_wrapped, {"model": lab06["frozen_head"]})
    assert "Mistake 5" in message and "the config sets no task_type and no modules_to_save" in message
    adapter = {"ADAPTER_DIR": lab06["OUTPUT_DIR"] / "adapter-without-head", "OUTPUT_DIR": lab06["OUTPUT_DIR"]}
    message = verdict(kernel.head_saved, adapter)
    assert "Mistake 5" in message and "head tensors found: none" in message


def _headless(lab):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    return get_peft_model(
        AutoModel.from_pretrained(lab["MODEL"]), LoraConfig(r=4, target_modules=["query", "value"])
    )


def _head_only_trained(lab):
    model = copy.deepcopy(lab["model"])
    set_lora_b(model, std=0)
    return model


@pytest.mark.parametrize(
    ("make_model", "rule", "words"),
    [
        (lambda lab: lab["base"](), "Train the adapter and the head", "`model` is not a PeftModel"),
        (_headless, "Mistake 5", "BertModel has no classification head"),
        (
            lambda lab: lab["frozen_head"],
            "Mistake 5",
            "the head `classifier` was never trained: without modules_to_save",
        ),
        (
            lambda lab: lab["untrained"],
            "Train the adapter and the head",
            "still equals the head `classifier`",
        ),
        (_head_only_trained, "Train the adapter and the head", "every lora_B matrix is still zero"),
    ],
    ids=["not_peft", "no_head", "head_not_in_modules_to_save", "untrained", "lora_untrained"],
)
def test_trained_check_names_each_untrained_part(kernel, lab06, verdict, make_model, rule, words):
    message = verdict(kernel.trained, lab06 | {"model": make_model(lab06)})
    assert message.startswith(f"[{rule}") and words in message


def test_untrained_classifier_is_at_chance(kernel, lab06, verdict):
    message = verdict(kernel.accuracy, lab06 | {"model": lab06["untrained"]})
    assert message.startswith("[A trained classifier beats chance") and "(chance is 50%" in message


def _llama_adapter(lab, folder):
    from peft import LoraConfig

    LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"]).save_pretrained(folder)
    return {"ADAPTER_DIR": folder}


@pytest.mark.parametrize(
    ("change", "rule", "words"),
    [
        (lambda lab, tmp: {"ADAPTER_DIR": tmp}, "A saved adapter reloads", "holds no saved adapter"),
        (_llama_adapter, "A saved adapter reloads", "PeftModel.from_pretrained could not load"),
        (
            lambda lab, tmp: {
                "model": lab["frozen_head"],
                "ADAPTER_DIR": lab["OUTPUT_DIR"] / "adapter-without-head",
            },
            "Mistake 5",
            "reloaded onto a fresh base, the adapter predicts differently",
        ),
        (
            lambda lab, tmp: {"reloaded": lab["model"]},
            "A saved adapter reloads",
            "is the trained model itself",
        ),
        (
            lambda lab, tmp: {"reloaded": lab["untrained"]},
            "A saved adapter reloads",
            "`reloaded` predicts differently from the trained model",
        ),
    ],
    ids=["nothing_saved", "adapter_of_another_model", "head_not_saved", "no_reload", "another_reload"],
)
def test_reload_check_names_each_wrong_reload(kernel, lab06, verdict, tmp_path, change, rule, words):
    message = verdict(kernel.reload, lab06 | change(lab06, tmp_path))
    assert message.startswith(f"[{rule}") and words in message


def test_the_training_loop_must_have_changed_the_adapter(hidden_check, monkeypatch):
    """Found by red-teaming: every trainable tensor nudged before a loop at learning rate 0 passed test_trained.
    While graded, the adapter recorded just before and right after the locked loop must differ."""
    kernel = hidden_check("lab06_task_heads.kernel")
    records = {}
    monkeypatch.setattr(kernel, "locked_record", lambda cell, name: records.get((cell, name)))
    kernel._trained_by_the_loop()  # a learner's own run: nothing recorded, nothing to judge
    before = {"tensors": {"a.lora_A.weight": "1", "a.lora_B.weight": "2"}, "untrained": False}
    records |= {("train_loop", "start"): before, ("train_loop", "end"): before}
    with pytest.raises(AssertionError, match="changed none of the adapter's tensors"):
        kernel._trained_by_the_loop()
    records[("train_loop", "end")] = {"tensors": {"a.lora_A.weight": "1", "a.lora_B.weight": "3"}}
    kernel._trained_by_the_loop()
    records[("train_loop", "end")] = {"unrecorded": "a library changed while it was recorded"}
    with pytest.raises(AssertionError, match="did not run to its end"):
        kernel._trained_by_the_loop()
