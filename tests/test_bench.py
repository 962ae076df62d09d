"""Smoke runs of every benchmark with tiny inputs: each script runs end to end and prints its tables.

The numbers themselves are measured by `make bench` and kept in bench/README.md; here only what cannot
depend on the machine's load is asserted (full scores, ratios present, identical parallel scores).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from labutils.grading import REPO as ROOT

pytestmark = [pytest.mark.slow, pytest.mark.bench]


def _run(*args: str, timeout: int = 900) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_course_bench_prints_its_four_tables(tmp_path):
    out = _run(
        "bench/course.py", "--labs", "00_setup", "--class-size", "1", "--workers", "1", "--out", str(tmp_path)
    )
    assert re.search(r"^00_setup\s+[\d.]+\s+\d+\s+ok$", out, re.M), out  # 1. ran without an error
    [row] = re.findall(r"^00_setup\s+(\d+)/(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", out, re.M)  # 2. autograde
    assert row[0] == row[1] and float(row[4]) > 0, "the reference scores full marks; the ratio is printed"
    assert "scores with 1 workers identical to the serial run" in out  # 3.
    ratio = float(re.search(r"bits per weight [\d.]+ \(floor 4\.127, ratio ([\d.]+)\)", out)[1])  # 4.
    assert 1.0 <= ratio <= 1.03
    assert (tmp_path / "nf4_floor.png").stat().st_size > 10_000


def test_grading_overhead_bench_compares_plain_isolated_and_parallel():
    out = _run("bench/grading_overhead.py", "--lab", "00_setup", "-n", "1")
    for mode in ("plain", "isolated", "parallel x"):
        assert re.search(rf"^{re.escape(mode)}\S*\s+[\d.]+\s+[\d.]+\s+[\d.]+$", out, re.M), out
    assert "parallel scores identical to the serial run" in out


def test_big_llama_bench_trains_a_shrunk_model_on_the_cpu():
    out = _run(
        "bench/big_llama.py",
        "--device",
        "cpu",
        "--hidden",
        "128",
        "--layers",
        "1",
        "--steps",
        "1",
        "--batches",
        "1",
        "--seq",
        "16",
    )
    assert re.search(r"CPU: Llama [\d.]+B parameters in NF4, LoRA trains [\d,]+ \(\d", out), out
    assert re.search(r"^\s+1\s+16\s+[\d.]+\s+\d+\s+nan\s+-$", out, re.M), out


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a real GPU run is bench/gpu_run.sh's job")
def test_gpu_script_says_it_needs_cuda_without_one():
    proc = subprocess.run(["bash", "bench/gpu_run.sh"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "no CUDA device" in proc.stderr and "make bench" in proc.stderr
    assert "Traceback" not in proc.stderr
