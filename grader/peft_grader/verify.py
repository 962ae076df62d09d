"""The outside verification: the lab's on-disk and evidence checks run again in a fresh process that the
learner's kernel cannot reach (`checks.outside`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
import sys
from pathlib import Path

from peft_grader.nbcourse import GRADER, grading_env, outside_targets

OUTSIDE_TIMEOUT_S = 300


@functools.cache
def outside_checks(lab: str) -> frozenset[str]:
    """The grade ids of `lab` that checks.outside decides (the lab's OUTSIDE, read without importing the checks)."""
    return frozenset(outside_targets(lab))


@functools.cache
def hardware_json() -> str:
    """The grading machine's hardware for the outside checks (checks.hardware.HARDWARE_VAR), detected once."""
    from labutils.doctor import detect_hardware

    hw = detect_hardware()
    return json.dumps({k: hw[k] for k in ("cuda_available", "bf16_supported", "device_name")})


def outside_verdicts(lab: str, folder: Path, zygote: str = "", views: Path | None = None) -> dict[str, str]:
    """Re-run the lab's on-disk checks in a fresh process: what the learner's kernel cannot tamper with.
    `views`: the lab's files as each check saw them (peft_grader.as_made.materialize), judged instead of the
    files as the notebook left them.

    With `zygote` (a warm-kernel zygote's address, peft_grader.warm), that process is a fork of it, which
    has the libraries imported already and has never run learner code. Fails closed: if the process
    crashes or times out, every outside check of the lab gets a failure ("could not be verified"), never
    a pass."""
    expected = outside_checks(lab)
    if not expected:
        return {}
    env = grading_env() | {"PYTHONPATH": str(GRADER), "PEFT_COURSE_HARDWARE": hardware_json()}
    argv = [lab, str(folder), *([str(views)] if views is not None else [])]
    try:
        proc = None
        if zygote:
            from peft_grader import warm

            with contextlib.suppress(OSError):  # the zygote gone: a fresh process as without one
                proc = warm.run_module(zygote, "checks.outside", argv, env, [str(GRADER)], OUTSIDE_TIMEOUT_S)
        if proc is None:
            proc = subprocess.run(
                [sys.executable, "-m", "checks.outside", *argv],
                env=env,
                capture_output=True,
                text=True,
                timeout=OUTSIDE_TIMEOUT_S,
            )
        found = (
            json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 and proc.stdout else None
        )
        why = (
            "" if found is not None else (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        )
    except subprocess.TimeoutExpired:
        found, why = None, f"timed out after {OUTSIDE_TIMEOUT_S} s"
    except (json.JSONDecodeError, IndexError) as err:
        found, why = None, f"unreadable answer ({err})"
    unverified = (
        f"could not be verified outside the notebook ({why[:200]}). Fix: grade this submission again; "
        "if it persists, the instructor should look at grading/logs."
    )
    return {grade_id: (found or {}).get(grade_id, unverified) for grade_id in expected}
