"""Lab 06's on-disk check (grader/checks/lab06_task_heads/files.py) on hand-written adapter folders: fast, no torch."""

from __future__ import annotations

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
    assert "no adapter_config.json" in folder_verdict(head_files.head_saved, full)


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
