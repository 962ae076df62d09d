"""Smoke runs of every benchmark with tiny inputs: each script runs end to end and prints its tables.

The numbers themselves are measured by `make bench` and kept in bench/README.md; here only what cannot
depend on the machine's load is asserted (full scores, ratios present, identical parallel scores).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from browser_helpers import _free_port

from peft_grader.nbcourse import REPO as ROOT

pytestmark = [pytest.mark.slow, pytest.mark.bench]


def _run(*args: str, timeout: int = 900) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_course_bench_prints_its_four_tables(tmp_path):
    out = _run(
        "bench/course.py", "--labs", "00_setup", "--class-size", "1", "--workers", "1", "--out", str(tmp_path)
    )
    assert re.search(r"^00_setup\s+[\d.]+\s+\d+\s+-\s+ok$", out, re.M), out  # 1. ran without an error
    [row] = re.findall(r"^00_setup\s+(\d+)/(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", out, re.M)  # 2. autograde
    assert row[0] == row[1] and float(row[4]) > 0, "the reference scores full marks; the ratio is printed"
    assert "scores of every run identical to the serial run" in out  # 3.
    ratio = float(re.search(r"bits per weight [\d.]+ \(floor 4\.127, ratio ([\d.]+)\)", out)[1])  # 4.
    assert 1.0 <= ratio <= 1.03
    assert (tmp_path / "nf4_floor.png").stat().st_size > 10_000


def test_grading_overhead_bench_compares_plain_cold_warm_and_parallel():
    out = _run("bench/grading_overhead.py", "--lab", "00_setup", "-n", "1")
    for mode in ("plain", "cold", "warm", "parallel x"):
        assert re.search(rf"^{re.escape(mode)}\S*\s+[\d.]+\s+[\d.]+\s+[\d.]+$", out, re.M), out
    assert "warm scores identical to the cold run's" in out
    assert re.search(r"parallel x\d+ scores identical to the cold run's", out)


def test_grading_profile_bench_splits_one_submission_into_phases():
    out = _run("bench/grading_profile.py", "--lab", "00_setup")
    assert re.search(
        r"^one 00_setup reference submission, warm kernels: [\d.]+ s in grade\(\), score (\d+)/\1$", out, re.M
    ), out
    for phase in (
        "nbgrader start",
        "kernel start",
        "imports cell",
        "learner's cells",
        "hidden checks",
        "outside checks",
    ):
        assert re.search(rf"^{re.escape(phase)}\s+[\d.]+\s+\d+%$", out, re.M), phase


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


def test_hub_memory_predicts_the_weights_held_at_hub_size():
    """bench/hub_memory.py's census and scaling, on the course's tiny Llama, against SmolLM2-360M's own sizes."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from labutils.models import ensure_tiny_model

    sys.path.insert(0, str(ROOT / "bench"))
    import hub_memory

    hub_id, path = "HuggingFaceTB/SmolLM2-360M", ensure_tiny_model("causal_lm")
    shapes, hub_ids = hub_memory.hub_shapes(), {hub_id}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.config._name_or_path = hub_id  # as if loaded from the hub id
    get_peft_model(model, LoraConfig(r=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    [held] = hub_memory.held_models([model, model.model])  # peft wrapped it in place: counted once
    now, hub = hub_memory.hub_bytes(held, shapes, hub_ids)
    assert now == 4 * sum(p.numel() for p in model.parameters())
    lora = 32 * 16 * ((960 + 960) * 2 + (960 + 320) * 2)  # r (in + out) on q, k, v, o of 32 layers
    # SmolLM2-360M's 361,821,120 parameters in float32: its head is its embedding, so the tiny model's own
    # lm_head counts nothing at hub size.
    assert hub == 4 * (361_821_120 + lora)

    twice = hub_memory.held_models([model, copy.deepcopy(model)])
    assert [hub_memory.hub_bytes(m, shapes, hub_ids)[1] for m in twice] == [hub, hub]
    model.config._name_or_path = str(path)  # a local tiny checkpoint, as the hidden checks load: its own size
    assert hub_memory.hub_bytes(hub_memory.held_models([model])[0], shapes, hub_ids) == (now, now)

    nf4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
    four_bit = AutoModelForCausalLM.from_pretrained(path, quantization_config=nf4, dtype=torch.bfloat16)
    per_weight = {name: per for name, _, per in hub_memory.held_models([four_bit])[0]["params"]}
    assert per_weight["model.layers.0.self_attn.q_proj.weight"] == 0.5  # packed: two weights per byte
    assert per_weight["model.embed_tokens.weight"] == 2  # not quantized: bfloat16


def test_hub_memory_bounds_cpu_ram_and_counts_the_cuda_context():
    """The CPU column: the kernel's resident memory with its tiny weights replaced by their hub size, at its own
    peak; measured on a GPU: the allocator's peak reserve plus the memory in use beyond it (CUDA's context)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import hub_memory

    model = {"class": "Tiny", "source": "local", "params": [["w", [1000], 4]]}  # 4 kB, not a hub model
    events = [
        {"event": "cell", "cell": "a", "rss": 900_000, "held": []},
        {"event": "cell", "cell": "b", "rss": 500_000, "held": [model]},
    ]
    top = hub_memory.peak(events, {}, set())
    assert (top["hub"], top["cpu"], top["cell"]) == (4000, 900_000, "b")  # the CPU peaks where weights do not
    gpu = [
        {"seconds": 9, "rss_peak": 3, "cuda_peak": 10, "cuda_reserved_peak": 12, "cuda_context": 5},
        {"seconds": 9, "rss_peak": 7, "cuda_peak": 30, "cuda_reserved_peak": 40, "cuda_context": 6},
    ]
    assert hub_memory.measured(gpu) == {"seconds": 9, "cpu": 7, "measured": 30, "device": 46}


@pytest.mark.skipif(os.geteuid() != 0, reason="a class hub makes Unix accounts: root only")
def test_hub_load_bench_logs_in_and_spawns_a_class(tmp_path):
    from class_accounts import class_machine

    with class_machine([], tmp_path):  # the course's Python reachable by the students' accounts
        out = _run("bench/hub_load.py", "--students", "2", "--port", str(_free_port()))
    rows = re.findall(r"^\| (load\d+) \| ([\d.]+) \| (\d+|no cgroup) \|$", out, re.M)
    assert len(rows) == 2 and "2 students logged in at once: all running" in out, out
    assert not [line for line in open("/etc/passwd") if line.startswith(tuple(r[0] for r in rows))]  # removed


def test_live_check_bench_times_each_check():
    out = _run("bench/live_check.py", "00_setup")
    assert re.search(r"^00_setup\s+test_bnb_config\s+[\d.]+\s+pass", out, re.M), out
    assert re.search(r"live checks; the slowest that does not train or generate took [\d.]+ s", out), out


def test_compare_classes_finds_a_changed_message_and_nothing_else(graded_class, tmp_path):
    """bench/compare_classes.py on the graded class against itself, then against a copy with one message changed."""
    import json

    same = subprocess.run(
        [sys.executable, "bench/compare_classes.py", str(graded_class.course), str(graded_class.course)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert same.returncode == 0 and same.stdout.strip().endswith(": 0 differences"), same.stdout[-2000:]
    changed = tmp_path / "course"
    shutil.copytree(graded_class.course / "feedback", changed / "feedback")
    summary = json.loads((graded_class.course / "summary.json").read_text())
    failing = next(r for r in summary if any(c["message"] for c in r["checks"]))
    check = next(c for c in failing["checks"] if c["message"])
    check["message"] += " (reworded)"
    (changed / "summary.json").write_text(json.dumps(summary))
    other = subprocess.run(
        [sys.executable, "bench/compare_classes.py", str(graded_class.course), str(changed)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert other.returncode == 1 and other.stdout.strip().endswith(": 1 differences"), other.stdout[-2000:]
    assert f"{check['name']} message" in other.stdout
