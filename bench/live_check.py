"""How long the live check (`labutils.check`, issue 17) takes, per test, on each lab's reference.

Runs each lab's released notebook with the reference solutions as a learner runs it (nbclient, a plain
kernel), where every test cell is followed by its `labutils.check(...)` cell, and reads each verdict's own
time (peft_grader.live: the master's test cell, and the on-disk check where the grader has one). The target
is 2 s for every check that does not train or generate; the few that do are marked. Wall-clock seconds on
this machine; run it on an idle machine.

    python bench/live_check.py [LAB ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from nbclient import NotebookClient

from labutils.livecheck import MIME
from peft_grader import catalogue, nbcourse

TARGET_S = 2.0
# checks that train, evaluate or generate from the saved adapter on purpose (the heavy "files." checks of the labs' OUTSIDE)
HEAVY = {
    ("05_save_load_merge", "test_merged_outputs"): "merges and compares the saved deployment",
    ("07_capstone", "test_val_improved"): "evaluates the saved adapter on the validation set",
    ("09_chat_sft", "test_stops"): "generates from the saved adapter",
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("labs", nargs="*", help="labs to time (default: all)")
    labs = parser.parse_args().labs or nbcourse.labs()
    rows, over = [], []
    for lab in labs:
        nb = catalogue.submission(lab)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="peft-live-") as work:
            client = NotebookClient(
                nb,
                timeout=600,
                kernel_name="python3",
                allow_errors=True,
                resources={"metadata": {"path": work}},
            )
            client.execute()
        whole = time.perf_counter() - started
        verdicts = [
            data for c in nb.cells for o in c.get("outputs", []) if (data := o.get("data", {}).get(MIME))
        ]
        for v in verdicts:
            note = HEAVY.get((lab, v["test"]), "")
            if v["seconds"] > TARGET_S and not note:
                over.append(f"{lab} {v['test']}")
            rows.append((lab, v["test"], v["seconds"], "pass" if v["passed"] else "FAIL", note))
        print(
            f"{lab}: {len(verdicts)} live checks, the notebook ran in {whole:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    print(f"{'lab':<22} {'test':<22} {'seconds':>7}  verdict  note")
    for lab, test, seconds, verdict, note in rows:
        print(f"{lab:<22} {test:<22} {seconds:>7.2f}  {verdict:<7}  {note}")
    light = [r[2] for r in rows if not r[4]]
    print(
        f"\n{len(rows)} live checks; the slowest that does not train or generate took {max(light, default=0):.2f} s "
        f"(target {TARGET_S:g} s); over the target: {', '.join(over) or 'none'}"
    )
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
