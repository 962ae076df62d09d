"""Intake of a class: a folder or zip of <student>/<lab>.ipynb, or what nbgrader collected (a course's
submitted/<student>/<lab>/<lab>.ipynb, from JupyterHub's exchange); each file checked before it is graded."""

from __future__ import annotations

import zipfile
from pathlib import Path

import nbformat

from labutils.errors import CourseError
from peft_grader.nbcourse import labs, master_notebook


def collect(submissions: Path, work: Path) -> Path:
    """A folder of <student>/<lab>.ipynb (unzipped first if a zip was given)."""
    submissions = Path(submissions)
    if not submissions.exists():
        raise CourseError(
            f"{submissions} does not exist. Fix: pass a folder of <student>/<lab>.ipynb or a zip of one."
        )
    if submissions.is_file():
        if not zipfile.is_zipfile(submissions):
            raise CourseError(
                f"{submissions} is neither a folder nor a zip file. "
                "Fix: pass a folder of <student>/<lab>.ipynb or a zip of one."
            )
        target = work / "unzipped"
        with zipfile.ZipFile(submissions) as zf:
            for member in zf.namelist():  # refuse paths that would escape the target folder
                if member.startswith("/") or ".." in Path(member).parts:
                    raise CourseError(
                        f"{submissions} holds an unsafe path: {member}. "
                        "Fix: zip the submissions folder again, with relative paths only."
                    )
            zf.extractall(target)
        entries = [p for p in target.iterdir() if not p.name.startswith(("__MACOSX", "."))]
        # a zip of one top folder holding the students
        if len(entries) == 1 and entries[0].is_dir() and not list(entries[0].glob("*.ipynb")):
            return entries[0]
        return target
    if (submissions / "submitted").is_dir() and (submissions / "nbgrader_config.py").exists():
        return submissions / "submitted"  # an nbgrader course: what `nbgrader collect` brought in
    return submissions


def submission(folder: Path, student: str, lab: str) -> Path:
    """A student's notebook of a lab: <student>/<lab>.ipynb, or nbgrader's <student>/<lab>/<lab>.ipynb."""
    collected = folder / student / lab / f"{lab}.ipynb"
    return collected if collected.exists() else folder / student / f"{lab}.ipynb"


def submitted_labs(folder: Path, student: str) -> set[str]:
    return {p.stem for p in (folder / student).glob("*.ipynb")} | {
        p.stem for p in (folder / student).glob("*/*.ipynb") if p.stem == p.parent.name
    }


# What nbgrader's exchange files beside a collected notebook, and its feedback release needs back: when it
# was submitted, and the secret that names the feedback file only that student can find.
SIDECARS = ("timestamp.txt", "submission_secret.txt")


def read_notebook(path: Path) -> str:
    """'' if the file is a notebook nbgrader can read, else the reason it is not."""

    try:
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported, not raised
        return f"not a readable notebook ({type(err).__name__}: {str(err)[:120]})"
    if nb.get("nbformat", 0) < 4:
        return f"notebook format {nb.get('nbformat')} is too old; save it with Jupyter 4+"
    if not nb.cells:
        return "the notebook is empty"
    return ""


def foreign(path: Path, lab: str) -> str:
    """'' if the notebook has cells of this lab, else why it cannot be this lab's submission."""
    master = master_notebook(lab)
    ids = {c.metadata.get("nbgrader", {}).get("grade_id") for c in nbformat.read(path, as_version=4).cells}
    if ids & {c.metadata.get("nbgrader", {}).get("grade_id") for c in master.cells} - {None}:
        return ""
    return f"not this lab's notebook: it has none of the cells of {lab} (another lab's file?)"


def lab_of(notebook: Path) -> str:
    if notebook.stem in labs():
        return notebook.stem
    for lab in labs():
        if not foreign(notebook, lab):
            return lab
    raise CourseError(
        f"{notebook} is not one of the course labs. Fix: check a notebook from notebooks/, saved under its "
        f"lab's name ({', '.join(labs())})."
    )


def digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
