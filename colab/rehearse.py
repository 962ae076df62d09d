"""Inside the Colab rehearsal's chroot (colab/rehearse.sh starts it): the set-up cell for real, then every lab.

1. `pip freeze`: what this Colab-like environment has before the course arrives;
2. the labs' set-up cell, its own text from lab 00, run as Colab runs it (`google.colab` imported first): the
   course is already at /content/peft-course where the cell clones it, so the cell's pip line runs for real;
3. `pip freeze` again: what the cell installed, upgraded and downgraded;
4. every lab in the hub profile, as its master (the reference solutions with the hidden checks inline), in a
   kernel like Colab's (`google.colab` loaded, nbgrader and JupyterLab absent), from a Hugging Face cache
   seeded with the course's models under the hub ids (HF_HUB_OFFLINE=1); lab 00's doctor must say ready.

Writes REPORT.md and REPORT.json; exits 1 if the set-up cell or a lab failed. Uses only what Colab has
(nbformat, nbclient, packaging) until the course is installed.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COURSE = Path("/content/peft-course")


def freeze() -> dict[str, str]:
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    ).stdout
    return {d["name"].lower().replace("_", "-"): d["version"] for d in json.loads(listed)}


def changes(before: dict[str, str], after: dict[str, str]) -> dict[str, list]:
    from packaging.version import InvalidVersion, Version

    def newer(a: str, b: str) -> bool:
        try:
            return Version(b) > Version(a)
        except InvalidVersion:
            return True

    out = {"installed": [], "upgraded": [], "downgraded": [], "removed": []}
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if old is None:
            out["installed"].append([name, new])
        elif new is None:
            out["removed"].append([name, old])
        else:
            out["upgraded" if newer(old, new) else "downgraded"].append([name, old, new])
    return out


def setup_cell() -> str:
    nb = json.loads((COURSE / "grader/source/00_setup/00_setup.ipynb").read_text())
    cell = next(
        c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "colab_setup"
    )
    return "".join(cell["source"])


def run_setup_cell(site: Path) -> tuple[int, str, float]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", "import google.colab\n" + setup_cell()],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd="/content",
    )
    return done.returncode, (done.stdout + done.stderr)[-3000:], time.perf_counter() - start


def run_lab(lab: str, env: dict[str, str], work: Path) -> dict:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(COURSE / "grader/source" / lab / f"{lab}.ipynb", as_version=4)
    folder = work / lab
    folder.mkdir()
    os.environ.update(env)
    start = time.perf_counter()
    error = ""
    try:
        NotebookClient(
            nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
        ).execute()
    except Exception as exc:  # a cell's error: the report keeps its last lines
        error = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
    printed = "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    if not error and "profile: hub" not in printed:
        error = "the set-up cell did not switch to the hub profile"
    if not error and lab == "00_setup" and "verdict: ready" not in printed:
        error = "the doctor is not ready"
    return {"lab": lab, "ok": not error, "seconds": round(time.perf_counter() - start, 1), "error": error}


def report_md(report: dict) -> str:
    ch = report["changes"]
    lines = [
        f"Colab rehearsal, {report['date']}: Python {report['python']} (Debian 13 chroot), "
        f"Colab's package set of colab/pip-freeze.gpu.txt, torch {report['torch']}.",
        "",
        f"The set-up cell: exit {report['setup']['exit']}, {report['setup']['seconds']:.0f} s.",
        "",
        "| the set-up cell | packages |",
        "|---|---|",
        "| installed | " + ", ".join(f"{n} {v}" for n, v in ch["installed"]) + " |",
        "| upgraded | " + ", ".join(f"{n} {a} -> {b}" for n, a, b in ch["upgraded"]) + " |",
        "| downgraded | " + ", ".join(f"{n} {a} -> {b}" for n, a, b in ch["downgraded"]) + " |",
        "| removed | " + ", ".join(f"{n} {v}" for n, v in ch["removed"]) + " |",
        "",
        "| lab | result | seconds (CPU) |",
        "|---|---|---:|",
    ]
    for lab in report["labs"]:
        lines.append(
            f"| {lab['lab']} | {'ok' if lab['ok'] else 'FAILED: ' + lab['error']} | {lab['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/content/report")
    work = Path(tempfile.mkdtemp(prefix="colab-"))
    site = work / "site" / "google" / "colab"  # a stand-in for Colab's module; `google` stays a namespace
    site.mkdir(parents=True)
    (site / "__init__.py").write_text('"""A stand-in for Colab\'s own module."""\n')
    site = work / "site"

    before = freeze()
    exit_code, printed, seconds = run_setup_cell(site)
    after = freeze()
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "torch": after.get("torch", "?"),
        "setup": {"exit": exit_code, "seconds": round(seconds, 1), "printed": printed},
        "changes": changes(before, after),
        "labs": [],
    }
    print(f"set-up cell: exit {exit_code}, {seconds:.0f} s", flush=True)
    if exit_code == 0:
        sys.path[:0] = [str(COURSE / "src"), str(COURSE / "grader")]
        from peft_grader import nbcourse
        from peft_grader.hub_cache import COLAB_KERNEL_STARTUP, seed_hub_cache

        seed_hub_cache(work / "hf-cache")
        startup = work / "ipython" / "profile_default" / "startup"
        startup.mkdir(parents=True)
        (startup / "00-colab.py").write_text(COLAB_KERNEL_STARTUP)
        env = {
            "IPYTHONDIR": str(work / "ipython"),
            "PYTHONPATH": os.pathsep.join([str(site), str(COURSE / "grader")]),
            "HF_HUB_CACHE": str(work / "hf-cache"),
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        os.environ.pop("PEFT_COURSE_PROFILE", None)  # the set-up cell chooses hub
        for lab in nbcourse.labs():
            result = run_lab(lab, env, work)
            print(
                f"{lab}: {'ok' if result['ok'] else 'FAILED ' + result['error']} ({result['seconds']} s)",
                flush=True,
            )
            report["labs"].append(result)
    Path(f"{out}.json").write_text(json.dumps(report, indent=1))
    Path(f"{out}.md").write_text(report_md(report))
    return 0 if exit_code == 0 and report["labs"] and all(lab["ok"] for lab in report["labs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
