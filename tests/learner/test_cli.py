"""`labutils` without the grader: the learner's package imports and runs alone, and the grader's commands
say what to install instead of failing with a traceback."""

from __future__ import annotations

import subprocess
import sys

WITHOUT_GRADER = """
import importlib.abc, sys

class NoGrader(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("peft_grader", "nbgrader"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoGrader())
import labutils, labutils.doctor, labutils.models, labutils.data  # the learner's house alone
from labutils import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def _labutils(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_GRADER, *args], capture_output=True, text=True)


def test_grader_commands_say_how_to_install_the_grader():
    for command in (["check", "notebooks/04_qlora.ipynb"], ["grade", "submissions/"], ["release"], ["demo"]):
        proc = _labutils(*command)
        assert proc.returncode == 2, (command, proc.stderr)
        assert "not installed here" in proc.stderr and "make setup" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_learner_commands_run_without_the_grader():
    proc = _labutils("--help")
    assert proc.returncode == 0 and "doctor" in proc.stdout and "(needs the grader)" in proc.stdout
