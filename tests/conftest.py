"""Shared fixtures: tiny course models are built into a per-session cache unless CI provides one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labutils.models import CACHE_VAR


@pytest.fixture(scope="session", autouse=True)
def _course_cache(tmp_path_factory):
    """Never build into ~/.cache during tests; an exported PEFT_COURSE_CACHE (CI's shared cache) wins."""
    if os.environ.get(CACHE_VAR):
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_VAR, str(tmp_path_factory.mktemp("peft-course-cache")))
        yield


@pytest.fixture
def tiny_cache(tmp_path, monkeypatch) -> Path:
    """An empty model cache for one test, for checks that must see a build happen."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_VAR, str(cache))
    return cache
