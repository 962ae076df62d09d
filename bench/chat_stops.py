"""How often lab 09's trained chat adapter stops: greedy answers that emit EOS within the generation limit, over
the whole validation split, for several training seeds (issue 30's target: at least 90% for every seed).

Runs lab 09's released notebook with the reference solutions as a learner runs it (nbclient, a plain kernel,
the tiny profile by default), once per seed (the seed given to the lab's SFTConfig, nothing else changed),
then loads each saved adapter as the hidden check does (checks.lab09_chat_sft.files: a fresh fp32 base, the
saved tokenizer and its template, the same generation limit) and generates for every validation prompt,
where the graded check uses the first 10.

    python bench/chat_stops.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from nbclient import NotebookClient

from peft_grader import catalogue, nbcourse

LAB = "09_chat_sft"


def run_seeded(lab: str, cell: str, setting: str, seed: int, work: Path) -> None:
    """`lab`'s released notebook with the reference solutions, `seed=seed` added after `setting` in its `cell`
    (nothing else changed), run in `work` as a learner runs it."""
    source = catalogue._solutions(lab)[cell]
    assert setting in source, f"{lab}'s {cell} cell changed: update this bench"
    nb = catalogue.submission(lab, {cell: source.replace(setting, f"{setting} seed={seed},")})
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    ).execute()


def trained_adapter(seed: int, work: Path) -> Path:
    """Lab 09 run with its SFTConfig seeded by `seed`; the folder of the adapter it saved."""
    run_seeded(LAB, "trainer", "max_steps=60,", seed, work)
    return work / "lab09-output" / "chat-adapter"


def stops(adapter_dir: Path) -> tuple[int, int]:
    """(greedy answers that emitted EOS, validation prompts), generated as the hidden check generates."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    import labutils
    from labutils.data import load_instructions

    sys.path.insert(0, str(nbcourse.GRADER))
    from checks.lab09_chat_sft.files import MAX_NEW_TOKENS, base_for

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    model = PeftModel.from_pretrained(
        base_for(labutils.course_model("causal_lm"), tokenizer), adapter_dir
    ).eval()
    eos, stopped = tokenizer.eos_token_id, 0
    examples = list(load_instructions()["validation"])
    with torch.no_grad():
        for item in examples:
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": item["instruction"]}],
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )
            out = model.generate(
                **prompt,
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id,
            )[0, prompt["input_ids"].shape[1] :]
            stopped += eos in out.tolist()
    return stopped, len(examples)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    seeds = parser.parse_args().seeds
    rates = []
    print(f"{'seed':>4} {'stopped':>8} {'of':>4} {'rate':>6} {'seconds':>8}")
    for seed in seeds:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="peft-stops-") as work:
            stopped, total = stops(trained_adapter(seed, Path(work)))
        rates.append(stopped / total)
        print(
            f"{seed:>4} {stopped:>8} {total:>4} {stopped / total:>6.0%} {time.perf_counter() - started:>8.0f}",
            flush=True,
        )
    print(f"lowest over {len(seeds)} seeds: {min(rates):.0%} (target: 90%)")
    return 0 if min(rates) >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
