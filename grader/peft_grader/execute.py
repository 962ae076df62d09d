"""Run labs as a learner does, without grading: the released notebook with the reference answers.

`python -m peft_grader.execute LAB FOLDER` runs one lab in FOLDER and prints its wall time and the
kernel's peak memory as JSON; `run_labs` runs several, each in a fresh process, so every lab's
peak is its own. `make demo` and `bench/` use it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from labutils.errors import CourseError

_MARK = "GPU-PEAK-MIB:"
_GPU_PEAK = f"""import json, torch
print({_MARK!r}, json.dumps(torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else None))"""
# What the run shows of each lab that trains: its measure before and after, read from the names its own cells
# bind (evaluated in the kernel once every cell has run).
METRICS = {
    "03_rank_alpha": ("training loss", "losses[0]", "losses[-1]", "{:.2f}"),
    "04_qlora": ("training loss", "losses[0]", "losses[-1]", "{:.2f}"),
    "05_save_load_merge": ("training loss", "losses[0]", "losses[-1]", "{:.2f}"),
    "06_task_heads": ("accuracy", "accuracy_before", "accuracy_after", "{:.0%}"),
    "07_capstone": ("exact match", "match_before", "match_after", "{:.1%}"),
    "08_adapter_life": ("loss, trained then resumed", "first_losses[0]", "more[-1]", "{:.2f}"),
    "09_chat_sft": ("training loss", "losses[0]", "losses[-1]", "{:.2f}"),
    "10_variants_precision": (
        "loss, chosen variant",
        "results[chosen_variant]['first_loss']",
        "results[chosen_variant]['loss']",
        "{:.2f}",
    ),
}
_METRIC_MARK = "BEFORE-AFTER:"


@dataclass
class LabRun:
    lab: str
    seconds: float
    peak_mib: float  # the kernel's peak resident memory
    error: str = ""  # the first failing cell's error, if any
    gpu_peak_mib: float | None = None  # torch's peak CUDA allocation, where the lab ran on a GPU
    before_after: str = ""  # the lab's measure before and after training (METRICS)


def _execute(lab: str, folder: Path, timeout: int) -> LabRun:
    import resource  # Unix only: imported where it is used

    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbformat.v4 import new_code_cell

    from peft_grader.catalogue import submission

    folder.mkdir(parents=True, exist_ok=True)
    nb = submission(lab)
    nb.cells.append(new_code_cell(_GPU_PEAK))  # runs last, after every cell of the lab succeeded
    if lab in METRICS:  # after the GPU peak; a measure the lab did not bind shows as "-", never as an error
        name, before, after, fmt = METRICS[lab]
        shown = f"{_METRIC_MARK!r}, {name!r}, {fmt!r}.format({before}), '->', {fmt!r}.format({after})"
        nb.cells.append(new_code_cell(f"try:\n    print({shown})\nexcept Exception:\n    pass"))
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    start, error = time.perf_counter(), ""
    try:
        client.execute()
    except CellExecutionError as err:
        error = str(err).strip().splitlines()[-1][:300]
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the (reaped) kernel, in KiB on Linux
    printed = "".join(o.get("text", "") for cell in nb.cells[-2:] for o in cell.get("outputs", []))
    gpu = json.loads(printed.split(_MARK, 1)[1].split("\n", 1)[0]) if _MARK in printed else None
    measured = printed.split(_METRIC_MARK, 1)[1].strip() if _METRIC_MARK in printed else ""
    return LabRun(lab, seconds, peak_kib / 1024, error, gpu, measured)


def run_lab(lab: str, folder: Path, timeout: int = 600) -> LabRun:
    """Run one lab's reference in a fresh process (so the peak memory is this lab's alone)."""
    proc = subprocess.run(
        [sys.executable, "-m", "peft_grader.execute", lab, str(folder), str(timeout)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return LabRun(lab, 0.0, 0.0, f"could not run: {tail[0][:300]}")
    return LabRun(**json.loads(proc.stdout.strip().splitlines()[-1]))


def run_labs(labs: list[str], folder: Path, timeout: int = 600) -> list[LabRun]:
    from tqdm.auto import tqdm

    runs = []
    for lab in (bar := tqdm(labs, desc="labs", unit="lab")):
        bar.set_postfix_str(lab)
        runs.append(run_lab(lab, Path(folder) / lab, timeout))
    return runs


def table(runs: list[LabRun]) -> str:
    gpu = any(r.gpu_peak_mib is not None for r in runs)
    lines = [
        f"{'lab':<22} {'seconds':>8} {'peak MiB':>9}"
        + (f" {'GPU MiB':>8}" if gpu else "")
        + f"  {'before -> after training':<40} result"
    ]
    lines += [
        f"{r.lab:<22} {r.seconds:8.1f} {r.peak_mib:9.0f}"
        + (f" {r.gpu_peak_mib or 0:8.0f}" if gpu else "")
        + f"  {r.before_after or '-':<40} {r.error or 'ok'}"
        for r in runs
    ]
    lines.append(f"{'whole course':<22} {sum(r.seconds for r in runs):8.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    lab, folder, timeout = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 600
    try:
        print(json.dumps(_execute(lab, folder, timeout).__dict__))
    except CourseError as err:
        sys.exit(f"error: {err}")
