"""The course installed without a clone: a wheel of this repository, installed (not editable) into a fresh
virtual environment (tests/conftest.py: borrowed_venv), runs from any folder and carries its data sets."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import borrowed_venv

from peft_grader.nbcourse import REPO

pytestmark = pytest.mark.slow


def test_a_wheel_installed_elsewhere_carries_the_data_and_runs(tmp_path):
    wheel = tmp_path / "wheel"
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(REPO), "-w"]
    subprocess.run([*build, str(wheel)], check=True, capture_output=True)
    python = borrowed_venv(tmp_path / "venv")
    [built] = wheel.glob("*.whl")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", str(built)], check=True, capture_output=True
    )
    probe = (
        "import labutils, labutils.data as d; print(labutils.__file__); print(d.data_dir()); "
        "print(len(d.load_instructions()['train']), len(d.load_sentiment()['validation']))"
    )
    out = subprocess.run(
        [python, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    module, folder, sizes = out.splitlines()
    assert module.startswith(str(tmp_path / "venv")) and folder.startswith(str(tmp_path / "venv"))
    assert all(int(n) > 0 for n in sizes.split())
