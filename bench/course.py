"""What learners, instructors and workshop hosts feel, measured on this machine (tiny profile).

    python bench/course.py [--labs 00_setup 04_qlora ...] [--class-size 4] [--workers N] [--out out/bench]

Prints four tables:
  1. each lab's reference run as a learner runs it (nbclient, no grading): seconds, peak memory, and
     peak GPU memory where it ran on CUDA; the whole course;
  2. autograding each lab's reference alone (sandboxed `labutils grade`, one worker): seconds per
     submission and the ratio to the plain run of table 1, measured in the same run;
  3. class throughput: a class of --class-size copies of the first lab's reference, graded with one
     worker and with --workers (and with --dask, on LocalClusters of as many Dask workers), and whether
     the scores are identical;
  4. the course's causal LM in NF4 + double quant: bits per weight of the quantized layers against the
     QLoRA paper's floor of 4.127, and the whole model against its bf16 footprint (a chart is saved).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import nbformat

from peft_grader import catalogue, execute, grading, nbcourse


def labs_table(labs: list[str], work: Path) -> dict[str, execute.LabRun]:
    runs = execute.run_labs(labs, work / "plain")
    print("\n1. Labs run as a learner runs them (reference answers, no grading)")
    print(execute.table(runs))
    return {r.lab: r for r in runs}


def autograde_table(labs: list[str], work: Path, plain: dict[str, execute.LabRun]) -> None:
    rows = []
    for lab in labs:
        subs = work / "one" / lab / "subs"
        (subs / "reference").mkdir(parents=True)
        nbformat.write(catalogue.submission(lab), subs / "reference" / f"{lab}.ipynb")
        start = time.perf_counter()
        [result] = grading.grade(subs, work / "one" / lab / "course", only=[lab], quiet=True, workers=1)
        rows.append((lab, result, time.perf_counter() - start))
    print("\n2. Autograding one submission per lab (sandboxed, 1 worker) against the plain run")
    print(f"{'lab':<22} {'score':>7} {'grade s':>8} {'plain s':>8} {'ratio':>6} {'class s':>8}")
    for lab, r, total in rows:
        ratio = r.seconds / plain[lab].seconds if plain[lab].seconds else float("nan")
        score = f"{r.score:g}/{r.max_score:g}"
        print(f"{lab:<22} {score:>7} {r.seconds:8.1f} {plain[lab].seconds:8.1f} {ratio:6.2f} {total:8.1f}")
    print(
        "grade s: one submission (sandbox, nbgrader autograde, outside checks); class s: the whole command,"
    )
    print("with nbgrader's per-class steps (generate_assignment, feedback, export) included.")


def throughput_table(lab: str, size: int, workers: int, work: Path, dask: bool = False) -> None:
    subs = work / "class" / "subs"
    for i in range(size):
        (subs / f"student{i:02d}").mkdir(parents=True)
        nbformat.write(catalogue.submission(lab), subs / f"student{i:02d}" / f"{lab}.ipynb")
    times, scores = {}, {}
    # local thread pools, then (--dask) LocalClusters of single-threaded Dask workers on the same class
    runs = [(f"{n} local", dict(workers=n)) for n in sorted({1, workers})]
    runs += [(f"{n} dask", dict(cluster=f"local:{n}")) for n in sorted({1, workers})] if dask else []
    for name, how in runs:
        start = time.perf_counter()
        results = grading.grade(subs, work / "class" / name.replace(" ", "-"), only=[lab], quiet=True, **how)
        times[name] = time.perf_counter() - start
        scores[name] = [(r.student, r.score, r.reason) for r in results]
    print(f"\n3. Class throughput: {size} submissions of {lab}")
    print(f"{'workers':>8} {'seconds':>8} {'per minute':>10} {'speed-up':>8}")
    serial = times["1 local"]
    for name, seconds in times.items():
        print(f"{name:>8} {seconds:8.1f} {size / seconds * 60:10.1f} {serial / seconds:8.2f}")
    same = all(s == scores["1 local"] for s in scores.values())
    print(f"scores of every run {'identical to' if same else 'DIFFER FROM'} the serial run")


def floor_table(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from labutils import plots
    from labutils.inspection import NF4_DOUBLE_QUANT_FLOOR_BITS, course_lm_in_nf4, quantized_storage
    from labutils.profiles import course_model

    nf4 = course_lm_in_nf4(double_quant=True)
    bf16 = AutoModelForCausalLM.from_pretrained(course_model("causal_lm"), dtype=torch.bfloat16)
    storage = quantized_storage(nf4)
    whole_nf4, whole_bf16 = nf4.get_memory_footprint(), bf16.get_memory_footprint()
    print("\n4. The course causal LM in NF4 + double quant against the floor")
    print(f"quantized layers: {storage.weights:,} weights")
    print(
        f"  bits per weight {storage.bits_per_weight:.3f} (floor {NF4_DOUBLE_QUANT_FLOOR_BITS:.3f}, "
        f"ratio {storage.bits_per_weight / NF4_DOUBLE_QUANT_FLOOR_BITS:.3f}); with code tables "
        f"{storage.bits_per_weight_with_tables:.3f} (ratio "
        f"{storage.bits_per_weight_with_tables / NF4_DOUBLE_QUANT_FLOOR_BITS:.3f})"
    )
    print(
        f"whole model: NF4 {whole_nf4 / 2**20:.1f} MiB against bf16 {whole_bf16 / 2**20:.1f} MiB "
        f"(ratio {whole_nf4 / whole_bf16:.3f}; embeddings and lm_head stay 16-bit)"
    )
    figure = plots.bars(
        {
            "floor": NF4_DOUBLE_QUANT_FLOOR_BITS,
            "NF4 + DQ": storage.bits_per_weight,
            "with tables": storage.bits_per_weight_with_tables,
            "bf16": 16.0,
        },
        "Storage of the quantized layers",
        "bits per weight",
        fmt="%.3f",
    )
    out.mkdir(parents=True, exist_ok=True)
    figure.savefig(out / "nf4_floor.png", dpi=120, bbox_inches="tight")
    print(f"chart: {out / 'nf4_floor.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--labs", nargs="*", default=None, help="labs to measure (default: all)")
    parser.add_argument("--class-size", type=int, default=4, help="submissions in the throughput class")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="out/bench", help="where the chart goes")
    parser.add_argument("--dask", action="store_true", help="also grade the class on Dask LocalClusters")
    args = parser.parse_args()
    labs = args.labs or nbcourse.labs()
    print(f"machine: {os.cpu_count()} CPU cores; profile: tiny; labs: {', '.join(labs)}")
    work = Path(tempfile.mkdtemp(prefix="peft-bench-"))
    try:
        plain = labs_table(labs, work)
        autograde_table(labs, work, plain)
        throughput_table(labs[0], args.class_size, args.workers, work, dask=args.dask)
        floor_table(Path(args.out))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
