"""Lab 05's on-disk checks (grader/checks/lab05_save_load_merge/files.py) on hand-written safetensors files: fast, no torch."""

from __future__ import annotations

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
    for relative, tensors in (extra or {}).items():
        write_safetensors(out / relative, tensors)
        (out / relative).with_name("config.json").write_text("{}")
    return {"OUTPUT_DIR": out, "ADAPTER_DIR": adapter_dir, "DEPLOY_DIR": deploy_dir}


def test_reference_layout_passes(deploy_files, tmp_path):
    ns = lab(tmp_path, deploy=plain())
    deploy_files.adapter_only_saved(ns)
    deploy_files.deploy_copy_saved(ns)


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
