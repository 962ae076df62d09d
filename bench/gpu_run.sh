#!/usr/bin/env bash
# One prepared command for a CUDA machine (issue 8): every lab in the tiny profile on the GPU, with its time
# and peak GPU memory, then QLoRA on a 1.1B Llama-architecture model built from its config (random
# weights: such machines cannot download any) to show what a T4 and a larger card hold, then every lab
# in the hub profile at hub size (bench/hub_memory.py --measure: random-weight hub-size models, per-lab
# seconds and peak GPU memory against the 12 GB budget of a T4).
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
python bench/big_llama.py --device cuda
python bench/hub_memory.py --measure --out out/gpu
