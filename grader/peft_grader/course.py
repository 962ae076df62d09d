"""Course-wide constants: where the repository lives (Colab badges, set-up cells) and the course id.

Where the course lives on GitHub is one setting, `repository` in pyproject.toml's `[tool.peft-course]`
table. `labutils release` (or `labutils release --repository OWNER/NAME`) writes it into every Colab
badge, every Colab set-up cell and WORKSHOP.md (`point_links`).
"""

from __future__ import annotations

import re
from pathlib import Path

DEFAULT_REPOSITORY = "peft-course/peft-course"
COURSE_ID = "peft-course"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"  # in a clone of the course
SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}")
# The course's own links: a Colab badge or link to a released lab, and the set-up cell's clone.
_COLAB_LINK = re.compile(
    r"(https://colab\.research\.google\.com/github/)[^/\s]+/[^/\s]+(/blob/main/notebooks/)"
)
_CLONE = re.compile(r"(git clone -q --depth 1 https://github\.com/)[^/\s]+/[^/\s]+( /content/peft-course)")


# `repository = "OWNER/NAME"` in the [tool.peft-course] table (read without tomllib, which Python 3.10 lacks)
_SETTING = re.compile(r'^(\[tool\.peft-course\][^\[]*?^repository\s*=\s*")([^"]*)(")', re.M | re.S)


def repository() -> str:
    """OWNER/NAME of the course on GitHub: pyproject.toml's [tool.peft-course] repository, or the default."""
    try:
        found = _SETTING.search(PYPROJECT.read_text())
    except OSError:
        return DEFAULT_REPOSITORY
    return found[2] if found else DEFAULT_REPOSITORY


def set_repository(slug: str, pyproject: Path = PYPROJECT) -> None:
    """Write `slug` as the course's repository setting in pyproject.toml."""
    _check(slug)
    text = pyproject.read_text()
    if _SETTING.search(text):
        text = _SETTING.sub(lambda m: f"{m[1]}{slug}{m[3]}", text, count=1)
    else:
        text = text.rstrip("\n") + f'\n\n[tool.peft-course]\nrepository = "{slug}"\n'
    pyproject.write_text(text)


def _check(slug: str) -> None:
    if not SLUG.fullmatch(slug):
        from labutils.errors import CourseError

        raise CourseError(
            f"{slug!r} is not a GitHub repository. Fix: give it as OWNER/NAME, e.g. my-org/peft-course."
        )


def colab_url(lab: str, slug: str | None = None) -> str:
    return f"https://colab.research.google.com/github/{slug or repository()}/blob/main/notebooks/{lab}.ipynb"


def point_links(text: str, slug: str) -> str:
    """`text` with the course's Colab links and the set-up cell's clone pointing at `slug` (OWNER/NAME).
    Other GitHub links (peft's issues, say) are left alone."""
    _check(slug)
    text = _COLAB_LINK.sub(lambda m: f"{m[1]}{slug}{m[2]}", text)
    return _CLONE.sub(lambda m: f"{m[1]}{slug}{m[2]}", text)
