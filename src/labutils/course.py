"""Course-wide constants: where the repository lives (Colab badges) and the lab sequence."""

from __future__ import annotations

# The one place the repository slug is set: Colab badges and the Colab set-up cell are checked against it.
REPO_SLUG = "peft-course/peft-course"
COURSE_ID = "peft-course"


def colab_url(lab: str) -> str:
    return f"https://colab.research.google.com/github/{REPO_SLUG}/blob/main/notebooks/{lab}.ipynb"
