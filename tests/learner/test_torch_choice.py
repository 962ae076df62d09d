"""`make setup`'s torch choice and the doctor's verdict on a torch that cannot use the machine's GPU, with a
fake `nvidia-smi` on PATH (the real one prints a header with the driver's CUDA version, and `-L` the GPUs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from labutils import doctor, torch_choice

ROOT = Path(__file__).resolve().parents[2]
SPEC = "torch==2.13.0"
HEADER = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
"""


def fake_nvidia_smi(folder: Path, cuda: str | None, gpus=("Tesla T4",), fails=False) -> Path:
    """An `nvidia-smi` that prints what the real one does for these GPUs and driver."""
    folder.mkdir(parents=True, exist_ok=True)
    listing = "".join(f"GPU {i}: {name} (UUID: GPU-0000{i})\n" for i, name in enumerate(gpus))
    header = HEADER.format(cuda=cuda) if cuda else "NVIDIA-SMI has failed\n"
    script = folder / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        + (
            "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9\n"
            if fails
            else ""
        )
        + f"if [ \"$1\" = -L ]; then printf '%s' '{listing}'; else printf '%s' '{header}'; fi\n"
    )
    script.chmod(0o755)
    return folder


@pytest.fixture
def on_path(tmp_path, monkeypatch):
    def install(**kwargs):
        folder = fake_nvidia_smi(tmp_path / "bin", **kwargs)
        monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
        return torch_choice.probe_nvidia()

    return install


def test_no_nvidia_smi_means_no_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    assert torch_choice.probe_nvidia() is None


def test_the_probe_reads_the_gpus_and_the_drivers_cuda(on_path):
    assert on_path(cuda="12.4", gpus=("Tesla T4", "Tesla T4")) == {
        "gpus": ["Tesla T4", "Tesla T4"],
        "cuda": (12, 4),
    }


def test_an_nvidia_smi_that_fails_means_no_usable_gpu(on_path):
    assert on_path(cuda="12.4", fails=True) is None


def test_a_machine_without_gpu_gets_the_cpu_wheels_or_says_why_not():
    args, why = torch_choice.choose(SPEC, None, cpu_index_reachable=True)
    assert args == [SPEC, "--index-url", "https://download.pytorch.org/whl/cpu"] and "CPU build" in why
    args, why = torch_choice.choose(SPEC, None, cpu_index_reachable=False)
    assert args == [SPEC]
    assert "cannot be reached" in why and "CUDA build" in why and "TORCH_INDEX" in why


@pytest.mark.parametrize(
    ("cuda", "index"),
    [((13, 0), None), ((13, 2), None), ((12, 9), "cu128"), ((12, 8), "cu128"), ((12, 6), "cu126")],
)
def test_a_gpu_gets_a_cuda_build_its_driver_can_run(cuda, index):
    args, why = torch_choice.choose(SPEC, {"gpus": ["Tesla T4"], "cuda": cuda}, cpu_index_reachable=False)
    assert args == (
        [SPEC] if index is None else [SPEC, "--index-url", f"https://download.pytorch.org/whl/{index}"]
    )
    assert "Tesla T4" in why and f"{cuda[0]}.{cuda[1]}" in why


def test_a_driver_older_than_every_build_stops_with_the_fix():
    with pytest.raises(
        SystemExit, match="Update the NVIDIA driver.*TORCH_INDEX=https://download.pytorch.org/whl/cpu"
    ):
        torch_choice.choose(SPEC, {"gpus": ["Tesla K80"], "cuda": (11, 4)}, cpu_index_reachable=False)


def test_torch_index_overrides_the_choice():
    args, _ = torch_choice.choose(
        SPEC, {"gpus": ["T4"], "cuda": (12, 6)}, False, override="http://mirror/cpu"
    )
    assert args == [SPEC, "--index-url", "http://mirror/cpu"]


def test_the_script_runs_pip_with_the_choice(on_path, monkeypatch, capsys):
    """As `make setup` runs it: a file, before labutils is installed (so standard library only)."""
    on_path(cuda="12.8")
    calls = []
    monkeypatch.setattr(torch_choice.subprocess, "call", lambda args: calls.append(args) or 0)
    assert torch_choice.main([SPEC]) == 0
    assert calls == [
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            SPEC,
            "--index-url",
            "https://download.pytorch.org/whl/cu128",
        ]
    ]
    assert "CUDA 12.8 build" in capsys.readouterr().out
    standalone = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            f"import runpy; runpy.run_path({str(ROOT / 'src/labutils/torch_choice.py')!r})",
        ],
        capture_output=True,
        text=True,
    )  # -S: no site-packages, so nothing but the standard library can be imported
    assert standalone.returncode == 0, standalone.stderr


def test_the_doctor_calls_a_cpu_only_torch_on_a_gpu_machine_not_ready(on_path):
    nvidia = on_path(cuda="12.4")
    hw = doctor.detect_hardware()  # this machine's torch: the CPU build, no CUDA
    assert hw["torch_cuda"] is None and not hw["cuda_available"]
    report = doctor.collect(
        {
            "versions": {"python": "3.11.7", **{p: "9999.0.0" for p in doctor.PACKAGES}},
            "hardware": hw,
            "nf4": {"ok": True, "device": "cpu", "rel_error": 0.09, "error": None},
            "bnb_cpu_kernel": "none",
            "profile": {"name": "tiny", "error": None},
            "colab": False,
            "nvidia": nvidia,
        }
    )
    gpu = next(c for c in report.checks if c.name == "gpu")
    assert gpu.status == doctor.FAIL and "Tesla T4" in gpu.detail and "CPU-only build" in gpu.detail
    assert "make setup" in gpu.fix and not report.ready
    assert "NOT READY" in report.render() and "CPU-only build" in report.render()


def test_the_doctor_names_a_driver_older_than_the_build(on_path):
    nvidia = on_path(cuda="12.2")
    hw = {"cuda_available": False, "torch_version": "2.13.0+cu130", "torch_cuda": "13.0"}
    row = doctor.check_gpu_use(nvidia, hw)
    assert row.status == doctor.FAIL and "needs CUDA 13.0; the driver supports CUDA 12.2" in row.detail


def test_no_gpu_row_where_torch_uses_the_gpu_or_there_is_none(on_path):
    assert doctor.check_gpu_use(None, {"cuda_available": False, "torch_cuda": None}) is None
    assert doctor.check_gpu_use(on_path(cuda="12.4"), {"cuda_available": True, "torch_cuda": "12.6"}) is None
