#!/usr/bin/env bash
# One prepared command for a CUDA machine (issue 8): every lab in the tiny profile on the GPU, with its time
# and peak GPU memory, then QLoRA on a 1.1B Llama-architecture model built from its config (random
# weights: such machines cannot download any) to show what a T4 and a larger card hold, then every lab
# in the hub profile at hub size (bench/hub_memory.py --measure: random-weight hub-size models, per-lab
# seconds, peak CPU RAM and peak GPU memory with CUDA's context against a T4's budget). Between the first two,
# each lab's reference and one catalogue entry per guide mistake are graded on the GPU against their exact
# scores.
#
#   bash bench/gpu_run.sh                      # with the course already installed (make setup, or pip)
#   WHEELS=/path/to/wheels bash bench/gpu_run.sh   # offline: installs from wheels carried along (a CUDA
#                                              # torch wheel plus the course's packages) into .venv-gpu
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${WHEELS:-}" ]]; then
  python3 -m venv .venv-gpu
  . .venv-gpu/bin/activate
  pip install -q --no-index --find-links "$WHEELS" torch -e ".[grader]" -c src/labutils/constraints.txt
elif [[ -x .venv/bin/python ]]; then
  . .venv/bin/activate
fi
export PEFT_COURSE_PROFILE=tiny HF_HUB_OFFLINE=1
python - <<'PY'
import torch
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device: bench/gpu_run.sh measures a GPU (use `make bench` on a CPU)")
import bitsandbytes, peft, transformers
print(f"{torch.cuda.get_device_name(0)} | torch {torch.__version__} | transformers {transformers.__version__}"
      f" | peft {peft.__version__} | bitsandbytes {bitsandbytes.__version__}")
PY
labutils build-models >/dev/null
python - <<'PY'
from pathlib import Path
from peft_grader import execute, grading
print(execute.table(execute.run_labs(grading.labs(), Path("out/gpu/labs"))))
PY
python - <<'PY'
# Grading on the GPU: each lab's reference and, for each of the guide's five mistakes, its first catalogue
# entry, in the tiny profile, against their exact scores (the catalogue's promise, as `make test` checks it).
from pathlib import Path

import nbformat

from peft_grader import catalogue, grading, nbcourse

root, picked, students = Path("out/gpu/class"), {}, {}
for lab in nbcourse.labs():
    for entry in catalogue.entries(lab):
        if entry.mistake.startswith("Mistake ") and entry.mistake not in picked:
            picked[entry.mistake] = entry

def write(student: str, lab: str, cells: dict | None) -> None:
    folder = root / "submissions" / student
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(catalogue.submission(lab, cells), folder / f"{lab}.ipynb")


for lab in nbcourse.labs():
    write("reference", lab, None)
students["reference"] = None
for entry in picked.values():
    students[f"{entry.lab}--{entry.name}"] = entry
    write(f"{entry.lab}--{entry.name}", entry.lab, entry.cells)
results = grading.grade(root / "submissions", root / "course", quiet=True, workers=1)
for r in sorted(results, key=lambda r: (r.student, r.lab)):
    if r.student in students and (r.student == "reference" or students[r.student].lab == r.lab):
        print(f"graded on the GPU: {r.student:<40} {r.lab:<24} {r.score:g}/{r.max_score:g}")
problems = catalogue.unexpected(results, students)
print("\n".join(problems) or "graded on the GPU: every score exact")
PY
python bench/big_llama.py --device cuda
python bench/hub_memory.py --measure --out out/gpu
