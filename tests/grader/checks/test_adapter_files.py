"""Adapter-only means the folder: any file that holds model weights, whatever its format or name, is
mistake 4, and so is a file in the adapter folder that neither save_pretrained nor the tokenizer wrote.
Files are written here the way learners write them (torch.save, pickle, NumPy, safetensors)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file


def make_adapter(folder):
    """What model.save_pretrained(folder) writes for a trained LoRA adapter."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file(
        {f"{prefix}.lora_A.weight": torch.ones(2, 4), f"{prefix}.lora_B.weight": torch.ones(4, 2)},
        str(folder / "adapter_model.safetensors"),
    )
    (folder / "adapter_config.json").write_text('{"r": 2, "lora_alpha": 4, "peft_type": "LORA"}')
    (folder / "README.md").write_text("adapter")


@pytest.fixture
def adapter_files(hidden_check):
    return hidden_check("adapter_files")


@pytest.fixture
def folder(tmp_path):
    make_adapter(tmp_path / "out" / "adapter")
    return tmp_path / "out"


def _state():
    return {"model.embed_tokens.weight": torch.ones(4, 2), "lm_head.weight": torch.ones(4, 2)}


WEIGHT_WRITERS = {
    "model.pt": lambda p: torch.save(_state(), p),
    "weights.pth": lambda p: torch.save(_state(), p, _use_new_zipfile_serialization=False),
    "state.bin": lambda p: torch.save(_state(), p),
    "state.pkl": lambda p: p.write_bytes(pickle.dumps(_state())),
    "base.safetensors": lambda p: save_file(_state(), str(p)),
    "no_suffix": lambda p: torch.save(_state(), p),
    "embeddings.npy": lambda p: np.save(p, np.ones((4, 2))),
    "arrays.npz": lambda p: np.savez(p, w=np.ones((4, 2))),
}


@pytest.mark.parametrize("name", sorted(WEIGHT_WRITERS))
def test_weights_in_any_format_are_found(adapter_files, tmp_path, name):
    path = tmp_path / name
    WEIGHT_WRITERS[name](path)
    assert adapter_files.holds_tensors(path)


def test_files_without_tensors_are_not_weights(adapter_files, tmp_path):
    from transformers import TrainingArguments

    torch.save(
        TrainingArguments(output_dir=str(tmp_path / "t"), report_to="none"), tmp_path / "training_args.bin"
    )
    (tmp_path / "notes.txt").write_text("rank 16 worked best")
    (tmp_path / "config.pkl").write_bytes(pickle.dumps({"r": 16, "alpha": 32}))
    for name in ("training_args.bin", "notes.txt", "config.pkl"):
        assert not adapter_files.holds_tensors(tmp_path / name), name


@pytest.mark.parametrize("name", sorted(WEIGHT_WRITERS))
@pytest.mark.parametrize("where", ["adapter", "."])
def test_weights_in_the_adapter_or_output_folder_are_mistake_4(adapter_files, folder, name, where):
    WEIGHT_WRITERS[name](folder / where / name)
    ns = {"ADAPTER_DIR": folder / "adapter", "OUTPUT_DIR": folder}
    with pytest.raises(AssertionError, match="Mistake 4"):
        adapter_files.adapter_only_saved(ns)


def test_a_file_the_lab_did_not_ask_for_in_the_adapter_folder_is_mistake_4(adapter_files, folder):
    (folder / "adapter" / "notes.txt").write_text("hi")
    with pytest.raises(AssertionError, match="did not ask for"):
        adapter_files.adapter_only_saved({"ADAPTER_DIR": folder / "adapter", "OUTPUT_DIR": folder})


def test_tokenizer_files_and_trainer_output_are_fine(adapter_files, folder):
    from transformers import TrainingArguments

    adapter = folder / "adapter"
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        (adapter / name).write_text("{}")
    torch.save(
        TrainingArguments(output_dir=str(folder / "t"), report_to="none"), adapter / "training_args.bin"
    )
    checkpoint = folder / "trainer" / "checkpoint-20"
    make_adapter(checkpoint)
    (checkpoint / "trainer_state.json").write_text("{}")
    torch.save({"state": {0: {"exp_avg": torch.ones(2)}}}, checkpoint / "optimizer.pt")
    (folder / "loss.png").write_bytes(b"\x89PNG\r\n")
    adapter_files.adapter_only_saved({"ADAPTER_DIR": adapter, "OUTPUT_DIR": folder})  # no failure


# ---- the adapter itself: what save_pretrained writes, and the trained adapter ------------------------
def test_nothing_saved_in_adapter_dir_is_named_by_both_checks(adapter_files, tmp_path, verdict):
    ns = {"ADAPTER_DIR": str(tmp_path / "never_saved")}  # a str is as good as a Path
    for check in (adapter_files.adapter_only_saved, adapter_files.adapter_trained):
        message = verdict(check, ns)
        assert message.startswith("[After training, save the adapter only")
        assert f"nothing was saved in {tmp_path / 'never_saved'}." in message


@pytest.mark.parametrize(
    ("remove", "words"),
    [
        ("adapter_config.json", "has no adapter_config.json."),
        ("adapter_model.safetensors", "has no adapter_model.safetensors."),
    ],
)
def test_adapter_only_wants_both_files_save_pretrained_writes(adapter_files, folder, verdict, remove, words):
    ns = {"ADAPTER_DIR": folder / "adapter", "OUTPUT_DIR": folder}
    assert verdict(adapter_files.adapter_only_saved, ns) == ""
    (folder / "adapter" / remove).unlink()
    message = verdict(adapter_files.adapter_only_saved, ns)
    assert message.startswith("[Mistake 4") and f"{folder / 'adapter'} {words}" in message


def test_full_weights_inside_the_adapter_file_are_mistake_4(adapter_files, folder, verdict):
    """A targeted head or a merged model rides along in adapter_model.safetensors itself."""
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file(
        {f"{prefix}.lora_A.weight": torch.ones(2, 4), "base_model.model.lm_head.weight": torch.ones(4, 4)},
        str(folder / "adapter" / "adapter_model.safetensors"),
    )
    message = verdict(adapter_files.adapter_only_saved, {"ADAPTER_DIR": folder / "adapter"})
    assert message.startswith("[Mistake 4")
    assert "holds 1 non-LoRA tensors (e.g. base_model.model.lm_head.weight)" in message
    # Lab 09 allows the new tokens' trained rows beside the LoRA weights.
    allowed = ("lora_", "lm_head")
    assert (
        verdict(lambda ns: adapter_files.adapter_only_saved(ns, allowed), {"ADAPTER_DIR": folder / "adapter"})
        == ""
    )


def test_a_trained_adapter_passes(adapter_files, folder, verdict):
    assert verdict(adapter_files.adapter_trained, {"ADAPTER_DIR": folder / "adapter"}) == ""


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda a: (a / "adapter_model.safetensors").unlink(), "(FileNotFoundError: "),
        (lambda a: (a / "adapter_config.json").unlink(), "(FileNotFoundError: "),
        (
            lambda a: (a / "adapter_model.safetensors").write_bytes(
                b"\x10\x00\x00\x00\x00\x00\x00\x00not json!"
            ),
            "(ValueError: adapter_model.safetensors is not a safetensors file)",
        ),
    ],
    ids=["no_weights", "no_config", "not_safetensors"],
)
def test_an_unreadable_adapter_is_not_a_trained_one(adapter_files, folder, verdict, damage, words):
    damage(folder / "adapter")
    message = verdict(adapter_files.adapter_trained, {"ADAPTER_DIR": folder / "adapter"})
    assert message.startswith("[After training, save the adapter only")
    assert f"{folder / 'adapter'} holds no readable adapter {words}" in message


def test_a_config_without_a_rank_is_not_a_lora_adapter(adapter_files, folder, verdict):
    (folder / "adapter" / "adapter_config.json").write_text(
        '{"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 20}'
    )
    message = verdict(adapter_files.adapter_trained, {"ADAPTER_DIR": folder / "adapter"})
    assert (
        message.startswith("[After training")
        and "adapter_config.json is not a LoRA adapter config." in message
    )


def test_an_adapter_whose_lora_B_is_all_zero_was_never_trained(adapter_files, folder, verdict):
    """LoRA starts with B = 0; a non-zero A alone (its random start) proves nothing."""
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file(
        {f"{prefix}.lora_A.weight": torch.ones(2, 4), f"{prefix}.lora_B.weight": torch.zeros(4, 2)},
        str(folder / "adapter" / "adapter_model.safetensors"),
    )
    message = verdict(adapter_files.adapter_trained, {"ADAPTER_DIR": folder / "adapter"})
    assert (
        message.startswith("[After training")
        and "every lora_B matrix in the saved adapter is zero" in message
    )


def test_the_guard_of_checks_that_load_the_adapter_fails_with_their_own_rule(adapter_files, folder, verdict):
    def guard(ns):
        return adapter_files.saved_adapter_dir(
            ns, 5, "{adapter_dir} holds no adapter to reload.", "save it first."
        )

    assert guard({"ADAPTER_DIR": str(folder / "adapter")}) == folder / "adapter"
    message = verdict(guard, {"ADAPTER_DIR": folder})  # the output folder: no adapter_config.json in it
    assert (
        message
        == f"[Mistake 5: Missing modules_to_save for task-specific heads] {folder} holds no adapter to reload. Fix: save it first."
    )
    merged = folder / "merged"  # model.merge_and_unload().save_pretrained(ADAPTER_DIR)
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    save_file(_state(), str(merged / "model.safetensors"))
    message = verdict(guard, {"ADAPTER_DIR": merged})
    assert (
        message.startswith("[Mistake 4: ")
        and "holds a whole model (config.json, model.safetensors)" in message
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_an_adapter_zeroed_by_multiplying_is_untrained_whatever_the_signs(
    adapter_files, tmp_path, dtype, verdict
):
    """t * 0 keeps the sign of a negative t (-0.0): the saved bytes are not all zero, the values are."""
    folder = tmp_path / "adapter"
    make_adapter(folder)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    trained = -torch.ones(4, 2, dtype=dtype)
    save_file(
        {f"{prefix}.lora_A.weight": torch.ones(2, 4, dtype=dtype), f"{prefix}.lora_B.weight": trained * 0},
        str(folder / "adapter_model.safetensors"),
    )
    assert "every lora_B matrix in the saved adapter is zero" in verdict(
        adapter_files.adapter_trained, {"ADAPTER_DIR": folder}
    )
    save_file(
        {f"{prefix}.lora_A.weight": torch.ones(2, 4, dtype=dtype), f"{prefix}.lora_B.weight": trained},
        str(folder / "adapter_model.safetensors"),
    )
    assert verdict(adapter_files.adapter_trained, {"ADAPTER_DIR": folder}) == ""


def _save_pair(folder, a, b, prefix="base_model.model.model.layers.0.self_attn.q_proj"):
    save_file(
        {f"{prefix}.lora_A.weight": a, f"{prefix}.lora_B.weight": b},
        str(folder / "adapter_model.safetensors"),
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_an_adapter_whose_update_is_zero_is_not_the_trained_one(adapter_files, tmp_path, dtype, verdict):
    """A trained lora_B beside a zeroed lora_A (or any pair whose product B·A is zero) changes nothing: the update,
    not lora_B alone, decides "trained". A trained pair, in any 16- or 32-bit dtype, still passes."""
    folder = tmp_path / "adapter"
    make_adapter(folder)
    torch.manual_seed(0)
    trained_b = torch.randn(4, 2, dtype=dtype)
    for a, b in (
        (torch.zeros(2, 4, dtype=dtype), trained_b),  # lora_A zeroed
        (-torch.ones(2, 4, dtype=dtype) * 0, trained_b),  # zeroed by multiplying (-0.0)
        (
            torch.ones(2, 4, dtype=dtype),
            torch.tensor([[1.0, -1.0]] * 4, dtype=dtype),
        ),  # B·A = 0, neither zero
    ):
        _save_pair(folder, a, b)
        message = verdict(adapter_files.adapter_trained, {"ADAPTER_DIR": folder})
        assert message.startswith("[After training") and "update B·A is zero in every layer" in message
    _save_pair(folder, torch.randn(2, 4, dtype=dtype), trained_b)
    assert verdict(adapter_files.adapter_trained, {"ADAPTER_DIR": folder}) == ""


def test_one_layer_with_a_non_zero_update_is_enough(adapter_files, tmp_path, verdict):
    folder = tmp_path / "adapter"
    make_adapter(folder)
    layers = {}
    for i, a in enumerate((torch.zeros(2, 4), torch.randn(2, 4))):
        prefix = f"base_model.model.model.layers.{i}.self_attn.q_proj"
        layers |= {f"{prefix}.lora_A.weight": a, f"{prefix}.lora_B.weight": torch.randn(4, 2)}
    save_file(layers, str(folder / "adapter_model.safetensors"))
    assert verdict(adapter_files.adapter_trained, {"ADAPTER_DIR": folder}) == ""


def test_a_zero_update_saved_as_bin_is_found_too(adapter_files, tmp_path, verdict):
    folder = tmp_path / "adapter"
    make_adapter(folder)
    (folder / "adapter_model.safetensors").unlink()
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    state = {f"{prefix}.lora_A.weight": torch.zeros(2, 4), f"{prefix}.lora_B.weight": torch.randn(4, 2)}
    torch.save(state, folder / "adapter_model.bin")
    assert "update B·A is zero" in verdict(adapter_files.adapter_trained, {"ADAPTER_DIR": folder})
    state[f"{prefix}.lora_A.weight"] = torch.randn(2, 4)
    torch.save(state, folder / "adapter_model.bin")
    assert verdict(adapter_files.adapter_trained, {"ADAPTER_DIR": folder}) == ""


def test_the_update_is_judged_on_real_products(adapter_files):
    """update_is_nonzero agrees with torch's B @ A on random, zero and conv-shaped pairs; unpaired shapes: None."""
    torch.manual_seed(1)
    cases = [
        (torch.randn(3, 5), torch.randn(6, 3)),
        (torch.zeros(3, 5), torch.randn(6, 3)),
        (torch.randn(3, 5), torch.zeros(6, 3)),
        (torch.randn(3, 2, 1, 1), torch.randn(4, 3, 1, 1)),  # a conv layer's pair
    ]
    for a, b in cases:
        expected = bool((b.flatten(1) @ a.flatten(1)).abs().max() > 0)
        found = adapter_files.update_is_nonzero(
            a.flatten().tolist(), list(a.shape), b.flatten().tolist(), list(b.shape)
        )
        assert found is expected
    assert adapter_files.update_is_nonzero([1.0] * 6, [3, 2], [1.0] * 8, [4, 2]) is None
