"""Lab 04's judges (grader/checks/lab04_qlora/judges.py), the guide's QLoRA rules that lab 00 and the capstone judge
by too, on hand-made records: a BitsAndBytesConfig's `to_dict()` fields and model manifests shaped as
checks.inspect_model.manifest writes them (one Llama layer, its sizes those of a 1B model). No torch."""

from __future__ import annotations

import pytest

CPU = {"cuda_available": False, "bf16_supported": True, "device_name": "CPU (no CUDA)"}
T4 = {"cuda_available": True, "bf16_supported": False, "device_name": "Tesla T4"}
A100 = {"cuda_available": True, "bf16_supported": True, "device_name": "NVIDIA A100"}

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
PROJECTIONS = [f"model.layers.0.self_attn.{n}" for n in ATTENTION] + [f"model.layers.0.mlp.{n}" for n in MLP]
NF4 = {"quant_type": "nf4", "nested": True, "compute_dtype": "bfloat16"}
LORA = {"task_type": "CAUSAL_LM", "peft_type": "LORA", "r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
        "bias": "none", "target_modules": sorted(ATTENTION), "modules_to_save": None}  # fmt: skip

# What BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
# bnb_4bit_compute_dtype=torch.bfloat16).to_dict() records.
BNB = {"quant_method": "bitsandbytes", "_load_in_8bit": False, "_load_in_4bit": True, "llm_int8_threshold": 6.0,
       "llm_int8_skip_modules": None, "llm_int8_enable_fp32_cpu_offload": False,
       "llm_int8_has_fp16_weight": False, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
       "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_storage": "uint8", "load_in_4bit": True,
       "load_in_8bit": False}  # fmt: skip


def model(
    *,
    lora=ATTENTION,
    storage="linear4bit",
    layer=NF4,
    prepared=True,
    config=None,
    trainable_base=(),
    lora_trainable=True,
):
    """A manifest: the course's Llama loaded with `storage` ("linear4bit", "linear8bit" or "" for not
    quantized), prepared for k-bit training or not, and wrapped by get_peft_model with LoRA on the `lora`
    leaves (None: never wrapped). `trainable_base`: base parameters the learner unfroze."""
    peft = lora is not None
    prefix = "base_model.model." if peft else ""
    half = "float32" if prepared else "bfloat16"  # prepare_model_for_kbit_training upcasts what is not 4-bit
    modules, linear4bit, parameters = {"": ""}, {}, {}
    stored = {
        "linear4bit": ["uint8", False, 2_097_152, True],
        "linear8bit": ["int8", False, 4_194_304, False],
    }
    for name in PROJECTIONS:
        wrapped = peft and name.rsplit(".", 1)[-1] in lora
        base = f"{prefix}{name}.base_layer" if wrapped else prefix + name
        modules[prefix + name] = "lora" if wrapped else storage
        modules[base] = storage
        if storage == "linear4bit":
            linear4bit[base] = dict(layer)
        parameters[f"{base}.weight"] = stored.get(storage, [half, False, 4_194_304, False])
        if wrapped:
            for ab in ("lora_A", "lora_B"):
                modules[f"{prefix}{name}.{ab}.default"] = ""
                parameters[f"{prefix}{name}.{ab}.default.weight"] = ["float32", lora_trainable, 32_768, False]
    for name, size in [("model.embed_tokens", 65_536_000), ("model.norm", 2048), ("lm_head", 65_536_000)]:
        modules[prefix + name] = ""
        parameters[f"{prefix}{name}.weight"] = [half, name in trainable_base, size, False]
    trainable = sum(n for _, grad, n, _ in parameters.values() if grad)
    total = sum(n * (2 if four_bit else 1) for _, _, n, four_bit in parameters.values())
    return {
        "type": "peft.peft_model.PeftModelForCausalLM"
        if peft
        else "transformers.models.llama.modeling_llama.LlamaForCausalLM",
        "base_type": "LlamaForCausalLM",
        "model_type": "llama",
        "peft": peft,
        "active_adapter": "default" if peft else None,
        "base_prefix": prefix,
        "base_children": ["model", "lm_head"],
        "modules": modules,
        "linear4bit": linear4bit,
        "parameters": parameters,
        "gradient_checkpointing": prepared and storage != "",
        "trainable_total": [trainable, total] if peft else None,
        "peft_config": {"default": LORA | (config or {})} if peft else {},
        "lora_config_targets": sorted(ATTENTION),
    }


@pytest.fixture
def judges(hidden_check):
    return hidden_check("lab04_qlora.judges")


# ---- the BitsAndBytesConfig -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"load_in_8bit": True, "load_in_4bit": False}, "loads the model in 8-bit (LLM.int8)"),
        ({"load_in_4bit": False}, "does not set load_in_4bit=True"),
        ({"bnb_4bit_quant_type": "fp4"}, "bnb_4bit_quant_type is 'fp4': FP4 spends its 16 levels"),
        ({"bnb_4bit_use_double_quant": False}, "double quantization is off"),
    ],
    ids=["8bit", "not_4bit", "fp4", "no_double_quant"],
)
def test_nf4_double_quant_names_each_storage_that_is_not_qlora(judges, verdict, change, words):
    assert verdict(judges.nf4_double_quant, BNB) == ""
    message = verdict(judges.nf4_double_quant, BNB | change)
    assert message.startswith(f"[{judges.QLORA_CONFIG}]") and words in message


@pytest.mark.parametrize(
    ("hardware", "right", "wrong"),
    [
        (CPU, "bfloat16", ["float32", "float16"]),
        (A100, "bfloat16", ["float16"]),
        (T4, "float16", ["bfloat16"]),
    ],
    ids=["cpu", "a100", "t4"],
)
def test_quantization_config_wants_the_hardwares_compute_dtype(judges, verdict, on, hardware, right, wrong):
    on(hardware)
    assert verdict(judges.quantization_config, BNB | {"bnb_4bit_compute_dtype": right}) == ""
    for dtype in wrong:
        message = verdict(judges.quantization_config, BNB | {"bnb_4bit_compute_dtype": dtype})
        assert f"bnb_4bit_compute_dtype is {dtype}; on this hardware it should be {right}" in message
        assert f"Fix: bnb_4bit_compute_dtype=torch.{right}." in message


def test_quantization_config_applies_the_storage_rules_first(judges, verdict, on):
    on(T4)
    assert "double quantization is off" in verdict(
        judges.quantization_config, BNB | {"bnb_4bit_use_double_quant": False}
    )


# ---- the loaded model -------------------------------------------------------------------------------
def test_loaded_in_4bit_accepts_the_nf4_double_quant_model(judges, verdict, on):
    on(CPU)
    assert verdict(judges.loaded_in_4bit, model(lora=None)) == ""
    assert verdict(judges.loaded_in_4bit, model()) == ""  # still true after get_peft_model


@pytest.mark.parametrize(
    ("hardware", "loaded", "words"),
    [
        (CPU, model(lora=None, storage="linear8bit"), "layers are 8-bit (Linear8bitLt), not 4-bit"),
        (
            CPU,
            model(lora=None, storage=""),
            "no 4-bit (Linear4bit) layers: the quantization config was built",
        ),
        (CPU, model(lora=None, layer=NF4 | {"quant_type": "fp4"}), "is stored as fp4, not nf4"),
        (CPU, model(lora=None, layer=NF4 | {"nested": False}), "was loaded without double quantization"),
        (
            CPU,
            model(lora=None, layer=NF4 | {"compute_dtype": "float32"}),
            "computes in float32, not bfloat16",
        ),
        (T4, model(lora=None), "computes in bfloat16, not float16"),
    ],
    ids=["8bit", "never_quantized", "fp4", "no_double_quant", "float32_on_cpu", "bfloat16_on_t4"],
)
def test_loaded_in_4bit_names_how_the_model_was_really_loaded(judges, verdict, on, hardware, loaded, words):
    on(hardware)
    message = verdict(judges.loaded_in_4bit, loaded)
    assert message.startswith(f"[{judges.QLORA_CONFIG}]") and words in message


# ---- prepare_model_for_kbit_training ----------------------------------------------------------------
def test_kbit_prepared_accepts_a_prepared_model_before_and_after_get_peft_model(judges, verdict):
    assert verdict(judges.kbit_prepared, model(lora=None)) == ""
    assert verdict(judges.kbit_prepared, model()) == ""
    # A model the config never reached: peft only upcasts it, so checkpointing is no evidence there.
    assert verdict(judges.kbit_prepared, model(storage="")) == ""


@pytest.mark.parametrize(
    ("unprepared", "words", "absent"),
    [
        (model() | {"gradient_checkpointing": False}, "gradient checkpointing is off.", "are still 16-bit"),
        (
            model() | {"gradient_checkpointing": True, "parameters": model(prepared=False)["parameters"]},
            "3 non-quantized parameters are still 16-bit (e.g. model.embed_tokens.weight).",
            "checkpointing is off",
        ),
        (
            model(prepared=False),
            "gradient checkpointing is off and 3 non-quantized parameters are still 16-bit",
            None,
        ),
        (
            model(storage="", prepared=False),
            "10 non-quantized parameters are still 16-bit",
            "checkpointing is",
        ),
    ],
    ids=["no_checkpointing", "not_upcast", "neither", "unquantized_not_upcast"],
)
def test_kbit_prepared_is_mistake_3_with_the_evidence_found(judges, verdict, unprepared, words, absent):
    message = verdict(judges.kbit_prepared, unprepared)
    assert message.startswith("[Mistake 3: Not using prepare_model_for_kbit_training()")
    assert words in message and "BEFORE get_peft_model" in message
    assert absent is None or absent not in message


# ---- the LoRA config --------------------------------------------------------------------------------
def test_llama_lora_config_accepts_attention_with_or_without_the_mlp(judges, verdict):
    assert verdict(judges.llama_lora_config, model()) == ""
    everything = model(lora=ATTENTION + MLP, config={"target_modules": sorted(ATTENTION + MLP)})
    assert verdict(judges.llama_lora_config, everything) == ""


@pytest.mark.parametrize(
    ("change", "rule", "words"),
    [
        ({"r": 64, "lora_alpha": 128}, "Mistake 2", "r=64 is too high: it multiplies trainable parameters"),
        ({"r": 4, "lora_alpha": 8}, "Mistake 2", "r=4 is too low for a simple instruction task"),
        ({"lora_alpha": 16}, "Mistake 2", "lora_alpha=16 with r=16: the update is scaled by alpha/r = 1."),
        ({"task_type": "SEQ_CLS"}, "Mistake 1", "task_type is 'SEQ_CLS'."),
        ({"bias": "all"}, "Check print_trainable_parameters()", "bias='all' also trains base-model biases."),
        ({"lora_dropout": 0.5}, "Mistake 2", "lora_dropout=0.5 is outside 0-0.1."),
    ],
    ids=["rank_high", "rank_low", "alpha", "task_type", "bias", "dropout"],
)
def test_llama_lora_config_names_each_wrong_setting(judges, verdict, change, rule, words):
    message = verdict(judges.llama_lora_config, model(config=change))
    assert message.startswith(f"[{rule}") and words in message


def test_llama_lora_config_refuses_lora_beyond_the_projections(judges, verdict):
    stray = model()
    stray["modules"]["base_model.model.lm_head"] = "lora"
    message = verdict(judges.llama_lora_config, stray)
    assert (
        message.startswith("[Mistake 1")
        and "LoRA also wraps base_model.model.lm_head, which are not" in message
    )


def test_llama_lora_config_wants_every_attention_projection(judges, verdict):
    partial = model(lora=("q_proj", "v_proj"), config={"target_modules": ["q_proj", "v_proj"]})
    message = verdict(judges.llama_lora_config, partial)
    assert message.startswith("[Mistake 1: Wrong target_modules")
    assert "2 Llama attention projections carry no adapter (k_proj, o_proj missing" in message
    assert "target_modules was ['q_proj', 'v_proj']" in message


@pytest.mark.parametrize(
    ("targets", "words", "absent"),
    [
        (["query", "key", "value"], "match no module of this Llama model (those are BERT names)", None),
        (["attn"], "target_modules ['attn'] match no module of this Llama model, so", "those are"),
        (sorted(ATTENTION), "`model` is not a PeftModel, so no LoRA adapter is attached.", "match no module"),
        ("all-linear", "`model` is not a PeftModel, so no LoRA adapter is attached.", "match no module"),
        (None, "`model` is not a PeftModel, so no LoRA adapter is attached.", "match no module"),
    ],
    ids=["bert_names", "unknown_names", "right_names_never_wrapped", "a_string", "no_lora_config"],
)
def test_llama_lora_config_explains_a_model_get_peft_model_never_wrapped(
    judges, verdict, targets, words, absent
):
    message = verdict(judges.llama_lora_config, model(lora=None) | {"lora_config_targets": targets})
    assert message.startswith("[Mistake 1: Wrong target_modules") and words in message
    assert absent is None or absent not in message


# ---- the trainable share ----------------------------------------------------------------------------
def test_trainable_share_accepts_lora_on_the_attention(judges, verdict):
    record = model()
    trainable, total = record["trainable_total"]
    assert 0 < trainable / total < 0.01
    assert verdict(judges.trainable_share, record) == ""


@pytest.mark.parametrize(
    ("record", "rule", "words"),
    [
        (model(lora=None), "Check print_trainable_parameters()", "`model` is not a PeftModel."),
        (
            model(lora_trainable=False),
            "Mistake 3",
            "no parameter is trainable: prepare_model_for_kbit_training",
        ),
        (
            model(trainable_base=("model.norm",)),
            "Check print_trainable_parameters()",
            "1 base-model parameters are trainable (e.g. base_model.model.model.norm.weight).",
        ),
        (
            model() | {"trainable_total": [1_500_000, 100_000_000]},
            "Check print_trainable_parameters()",
            "1.50% of parameters train; LoRA should train well under 1%.",
        ),
    ],
    ids=["not_peft", "frozen_lora", "base_unfrozen", "share_too_large"],
)
def test_trainable_share_names_what_trains(judges, verdict, record, rule, words):
    message = verdict(judges.trainable_share, record)
    assert message.startswith(f"[{rule}") and words in message


# ---- the config the model was loaded with (FROM_RECORDS: the model the training loop trained) --------------------
def test_quantization_config_judges_the_storage_the_model_was_loaded_with(judges, verdict, on):
    """bnb_config asks for NF4, the model was loaded through another config: its layers' quant_state decides."""
    on(CPU)
    assert verdict(judges.quantization_config, BNB | {"model": model()}) == ""
    # built right but never passed to from_pretrained: the loading check's mistake alone
    assert verdict(judges.quantization_config, BNB | {"model": model(storage="")}) == ""
    fp4 = verdict(judges.quantization_config, BNB | {"model": model(layer=NF4 | {"quant_type": "fp4"})})
    assert fp4.startswith(f"[{judges.QLORA_CONFIG}]") and "is stored as fp4, not nf4" in fp4
    eight = verdict(judges.quantization_config, BNB | {"model": model(lora=None, storage="linear8bit")})
    assert "layers are 8-bit (Linear8bitLt), not 4-bit" in eight
    single = verdict(judges.quantization_config, BNB | {"model": model(layer=NF4 | {"nested": False})})
    assert "was loaded without double quantization" in single
    # the learner's own config is judged first, with its own words
    assert "bnb_4bit_quant_type is 'fp4'" in verdict(
        judges.quantization_config,
        BNB | {"bnb_4bit_quant_type": "fp4", "model": model(layer=NF4 | {"quant_type": "fp4"})},
    )


def test_bnb_config_is_also_judged_on_the_model_the_training_loop_trained(hidden_check, on):
    """Outside the kernel the test cell's record (the learner's bnb_config) is judged again with the manifest the
    locked cell train_loop recorded: an FP4 model beside an NF4 bnb_config fails."""
    on(CPU)
    evidence, runner = hidden_check("evidence"), hidden_check("outside")
    from checks import PeftMistake

    def judge(recorded):
        bundle = {evidence.MIME: {"check": "quantization_config", "record": BNB}}
        cells = {
            "test_bnb_config": {"outputs": [{"output_type": "display_data", "data": bundle}]},
            "train_loop": {"metadata": {evidence.RECORDED_KEY: recorded}},
        }
        runner._judge_record("04_qlora", "judges.quantization_config", cells, "test_bnb_config")

    judge({"model": model()})
    judge({"model": model(lora=None, storage="")})  # never quantized: test_loaded_4bit's mistake
    with pytest.raises(
        PeftMistake, match=r"stored as fp4, not nf4.*judged on what the notebook's cell train_loop"
    ):
        judge({"model": model(layer=NF4 | {"quant_type": "fp4"})})


# ---- the manifest reads what does the work (checks.inspect_model) ------------------------------------------------
@pytest.fixture(scope="module")
def tiny_llama():
    from labutils.models import ensure_tiny_model

    return str(ensure_tiny_model("causal_lm"))


def _load(path, quant_type="nf4"):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    return AutoModelForCausalLM.from_pretrained(path, quantization_config=config, device_map="cpu")


def test_manifest_reads_the_quant_type_dequantization_uses(hidden_check, tiny_llama):
    """A Params4bit's own `quant_type` is a label no forward reads: its quant_state's is what dequantizes."""
    import bitsandbytes as bnb

    manifest = hidden_check("inspect_model").manifest
    nf4 = manifest(_load(tiny_llama))
    assert nf4["linear4bit"] and {layer["quant_type"] for layer in nf4["linear4bit"].values()} == {"nf4"}
    relabelled = _load(tiny_llama, "fp4")
    for module in relabelled.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.weight.quant_type = "nf4"
    assert {layer["quant_type"] for layer in manifest(relabelled)["linear4bit"].values()} == {"fp4"}


def test_manifest_reads_checkpointing_where_the_layers_run_it(hidden_check, tiny_llama):
    """Checkpointing is on where transformers' layers run it: the flag and torch's checkpoint on the decoder layers,
    as gradient_checkpointing_enable() (prepare_model_for_kbit_training) sets them, every n-th layer or offloaded
    too; the flag on the head, or beside a function of the learner's, checkpoints nothing."""
    import torch.utils.checkpoint
    from peft import prepare_model_for_kbit_training

    manifest = hidden_check("inspect_model").manifest
    assert manifest(prepare_model_for_kbit_training(_load(tiny_llama)))["gradient_checkpointing"] is True
    prepared = prepare_model_for_kbit_training(
        _load(tiny_llama), gradient_checkpointing_kwargs={"use_reentrant": False}
    )
    assert manifest(prepared)["gradient_checkpointing"] is True
    spaced = _load(tiny_llama)
    spaced.activation_checkpointing_enable(every_n_layers=2, offload=True)
    assert manifest(spaced)["gradient_checkpointing"] is True
    spaced.gradient_checkpointing_disable()
    assert manifest(spaced)["gradient_checkpointing"] is False

    head = _load(tiny_llama)
    head.lm_head.gradient_checkpointing = True
    head.lm_head._gradient_checkpointing_func = torch.utils.checkpoint.checkpoint
    head.model.gradient_checkpointing = True  # the model's own flag: no forward of transformers 5 reads it
    assert manifest(head)["gradient_checkpointing"] is False
    layers = _load(tiny_llama)
    for layer in layers.model.layers:
        layer.gradient_checkpointing = True
        layer._gradient_checkpointing_func = lambda function, *args: function(*args)  # keeps every activation
    assert manifest(layers)["gradient_checkpointing"] is False
    for layer in layers.model.layers:  # torch's own checkpoint on the layers: they do checkpoint
        layer._gradient_checkpointing_func = torch.utils.checkpoint.checkpoint
    assert manifest(layers)["gradient_checkpointing"] is True


# ---- the saved adapter is the one the training loop trained (files.py) ------------------------------------------
@pytest.fixture
def lab04_files(hidden_check, monkeypatch):
    """lab 04's files checks, with notebook_records(start, end) setting what the training loop recorded."""
    evidence, files = hidden_check("evidence"), hidden_check("lab04_qlora.files")

    def records(start=None, end=None, **more):
        found = {k: v for k, v in {"start": start, "end": end, **more}.items() if v is not None}
        monkeypatch.setattr(evidence, "notebook_records", {"train_loop": found})

    files.records = records
    return files


def _peft(dtype=None):
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(8, 8)), LoraConfig(r=2, target_modules=["0"]))
    return model.to(dtype) if dtype is not None else model


def _train(model):
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(torch.linspace(-0.5, 0.5, p.numel()).reshape(p.shape).to(p.dtype))


@pytest.mark.parametrize("dtype", [None, "bfloat16", "float16"])
def test_saved_digests_are_the_digests_of_the_tensors_in_memory(hidden_check, tmp_path, dtype):
    import torch

    evidence, files = hidden_check("evidence"), hidden_check("lab04_qlora.files")
    model = _peft(getattr(torch, dtype) if dtype else None)
    _train(model)
    model.save_pretrained(tmp_path / "a")
    model.save_pretrained(str(tmp_path / "b"), safe_serialization=False)
    in_memory = evidence.RECORDERS["adapter_state"](model)["tensors"]
    assert files.saved_digests(tmp_path / "a") == in_memory
    assert files.saved_digests(tmp_path / "b") == in_memory


def test_adapter_trained_wants_the_tensors_the_training_loop_ended_with(lab04_files, verdict, tmp_path):
    from checks.evidence import RECORDERS

    model = _peft()
    start = RECORDERS["adapter_state"](model)
    _train(model)
    end = RECORDERS["adapter_state"](model)
    saved = tmp_path / "adapter"
    model.save_pretrained(saved)  # right after training, a Path, safetensors by default
    ns = {"ADAPTER_DIR": saved}
    lab04_files.records()  # not graded (a learner's own run): the file alone decides
    assert verdict(lab04_files.adapter_trained, ns) == ""
    lab04_files.records(start, end)
    assert verdict(lab04_files.adapter_trained, ns) == ""
    model.save_pretrained(str(saved), safe_serialization=False)  # a str, and the legacy .bin beside it
    assert verdict(lab04_files.adapter_trained, {"ADAPTER_DIR": str(saved)}) == ""

    _train(
        model
    )  # changed after the loop (a random lora_B written before saving): not what the loop ended with
    model.save_pretrained(saved)
    message = verdict(lab04_files.adapter_trained, ns)
    assert message.startswith(f"[{lab04_files.TRAINED_ADAPTER}]")
    assert "is not the one the lab's training loop ended with: 2 of its 2 tensors differ" in message

    # the loop took no step (train_steps = 0): what the file holds was written outside it, before or after
    lab04_files.records(RECORDERS["adapter_state"](model), RECORDERS["adapter_state"](model))
    message = verdict(lab04_files.adapter_trained, ns)
    assert "the lab's training loop changed none of the adapter's tensors" in message

    lab04_files.records(start)  # the loop never finished
    assert "did not run to its end" in verdict(lab04_files.adapter_trained, ns)
    lab04_files.records(start, {"restarted": True})
    with pytest.raises(LookupError, match="kernel restarted"):
        lab04_files.adapter_trained(ns)
    lab04_files.records(start, {"unrecorded": "TypeError: not a PeftModel"})
    with pytest.raises(LookupError, match="recorded no end"):
        lab04_files.adapter_trained(ns)


def test_adapter_trained_names_an_untrained_file_first(lab04_files, verdict, tmp_path):
    """An adapter saved untrained fails on its zero lora_B, in the words it always had, before its provenance."""
    from checks.evidence import RECORDERS

    model = _peft()
    state = RECORDERS["adapter_state"](model)
    model.save_pretrained(tmp_path)
    lab04_files.records(state, state)
    assert "every lora_B matrix in the saved adapter is zero" in verdict(
        lab04_files.adapter_trained, {"ADAPTER_DIR": tmp_path}
    )
