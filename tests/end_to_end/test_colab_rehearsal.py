"""The workshop path rehearsed offline: every lab, top to bottom, as an attendee runs it on Colab.

What Colab's runtime has and lacks, set up for one kernel per lab:
- `google.colab` is imported before the first cell (the set-up cells look for it in sys.modules); the
  set-up cell's shell commands run, with stand-ins for `git` and `pip` that record their arguments first on
  PATH, and the course folder in the lab's own folder (each badge opens a fresh runtime);
  tests/learner/test_colab.py checks what they install (the course without the `grader` and `dev` extras)
  and that a failed step stops the cell and a rerun repairs it;
- `nbgrader` and `jupyterlab`, which that install leaves out, cannot be imported;
- the profile is not set beforehand: the set-up cell switches to `hub`;
- the hub ids are served from a Hugging Face cache seeded with the course's own models under those ids
  (`peft_grader.hub_cache.seed_hub_cache`, in the cache layout, by huggingface_hub's own functions), with
  `HF_HUB_OFFLINE=1`: model ids, tokenizers from the hub cache, `device_map` and the profile switch all
  take the hub code path.
Each lab runs as its master: the reference solutions with the hidden tests inline, so every hidden
check that reads the profile runs too. Any error fails the rehearsal; lab 00's doctor must say ready.
"""

from __future__ import annotations

import os

import nbformat
import pytest
from conftest import colab_tool_stand_ins
from nbclient import NotebookClient

from peft_grader import nbcourse

pytestmark = pytest.mark.slow

PROBE = """
try:
    import nbgrader  # noqa: F401
    print("nbgrader: importable")
except ModuleNotFoundError:
    print("nbgrader: not importable")
import os
log = os.path.join(os.environ["COLAB_TOOLS"], "log")
print("shell commands:", len(open(log).read().splitlines()) if os.path.exists(log) else 0)
"""


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """The environment of a Colab kernel: IPython startup, the google.colab stand-in, the seeded hub cache."""
    from peft_grader.hub_cache import COLAB_KERNEL_STARTUP, seed_hub_cache

    root = tmp_path_factory.mktemp("colab")
    startup = root / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text(COLAB_KERNEL_STARTUP)
    colab_module = root / "site" / "google" / "colab"  # `google` stays a namespace package
    colab_module.mkdir(parents=True)
    (colab_module / "__init__.py").write_text('"""A stand-in for Colab\'s own module."""\n')
    seed_hub_cache(root / "hf-cache")
    # git and pip stand-ins: they record the set-up cell's commands in the runtime's folder, clone an empty course
    tools = colab_tool_stand_ins(root / "bin", "$COLAB_TOOLS/log")
    return {
        "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
        "IPYTHONDIR": str(root / "ipython"),
        "PYTHONPATH": os.pathsep.join([str(root / "site"), str(nbcourse.GRADER)]),
        "HF_HUB_CACHE": str(root / "hf-cache"),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "root": root,
    }


def _printed(nb) -> str:
    return "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )


@pytest.mark.parametrize("lab", nbcourse.labs())
def test_lab_runs_on_colab_in_the_hub_profile(lab, colab, monkeypatch):
    for name, value in colab.items():
        if name != "root":
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("PEFT_COURSE_PROFILE", raising=False)  # the set-up cell chooses hub
    nb = nbformat.read(nbcourse.SOURCE / lab / f"{lab}.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    work = colab["root"] / lab
    work.mkdir()
    monkeypatch.setenv("COLAB_TOOLS", str(work))  # this runtime's record of the set-up cell's commands
    for cell in nb.cells:  # this runtime's /content, in the lab's folder
        cell.source = cell.source.replace("/content/peft-course", str(work / "peft-course"))
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    ).execute()
    printed = _printed(nb)
    assert "profile: hub" in printed, "the set-up cell did not switch to the hub profile"
    assert "nbgrader: not importable" in printed and "shell commands: 2" in printed
    if lab == "00_setup":
        assert "verdict: ready" in printed, "the doctor is not ready on Colab"
