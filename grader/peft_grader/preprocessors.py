"""Our steps of `nbgrader autograde`, as nbgrader preprocessors, so a plain `nbgrader autograde` in a course
folder applies them too: grader/nbgrader_config.py puts them in nbgrader's own pipeline.

Autograde runs two lists of preprocessors. Ours come first in the sanitizing list, before nbgrader
restores the locked cells:
- `RepairOrder` puts the master's cells back in the master's order;
- `ReviewTampering` comments out statements that can only reach into the grader (peft_grader.tamper) and
  records what it removed and flagged in the notebook's metadata, where `labutils grade` reads it.
In the executing list `peft_grader.sandbox_execute.SandboxExecute` replaces nbgrader's Execute.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor

REVIEW_KEY = "peft_course_review"  # notebook metadata: {"removed": [...], "flagged": [...]}
TIMEOUT_KEY = (
    "peft_course_timeout"  # a master's locked cell: the seconds it may take, past the course's timeout
)


def master_of(preprocessor, resources: dict):
    """The master notebook (grader/source) of the notebook being graded."""
    coursedir = CourseDirectory(config=preprocessor.config)
    meta = resources["nbgrader"]
    folder = Path(coursedir.format_path(coursedir.source_directory, ".", meta["assignment"]))
    return nbformat.read(folder / f"{meta['notebook']}.ipynb", as_version=4)


def repair_order(nb, master) -> None:
    """Put the master's cells back in the master's order, in place.

    nbgrader restores the content of locked and test cells but not where they stand, so a test moved
    below a late fix would pass. Each master cell moves back to its place with the learner's own cells
    that followed it; copies of a master cell become plain cells (nbgrader 0.9.6 crashes on them).
    """
    order = {
        c.metadata["nbgrader"]["grade_id"]: i for i, c in enumerate(master.cells) if "nbgrader" in c.metadata
    }
    groups, seen = [[-1, []]], set()
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in seen:
            del cell.metadata["nbgrader"]
        elif gid in order:
            seen.add(gid)
            groups.append([order[gid], []])
        groups[-1][1].append(cell)
    nb.cells = [cell for _, cells in sorted(groups, key=lambda g: g[0]) for cell in cells]


def locked_ids(master) -> set[str]:
    """grade_ids of the master's locked cells: nbgrader restores them, so learners cannot change them."""
    return {
        c.metadata["nbgrader"]["grade_id"]
        for c in master.cells
        if c.metadata.get("nbgrader", {}).get("locked")
    }


def declared_timeouts(master) -> dict[str, int]:
    """grade_id -> seconds, for the master's locked cells that declare a longer timeout than the course's.

    A lab declares one for a cell that trains, where a mistake makes the training slow on some CPUs
    (the unprepared k-bit model of labs 04 and 07 trains its bf16 layers through torch's slow bf16 matmul
    on a CPU without native bf16, and so does lab 05's bf16 model: 33 s alone, 46 s under a loaded class run,
    against a 4x margin under the course's 180 s; lab 10's comparison trains five variants over three seeds, 13 s
    alone). Only locked cells count: nbgrader restores their source, so a
    learner cannot give their own code more time.
    """
    return {
        c.metadata["nbgrader"]["grade_id"]: int(c.metadata[TIMEOUT_KEY])
        for c in master.cells
        if c.metadata.get("nbgrader", {}).get("locked") and TIMEOUT_KEY in c.metadata
    }


class RepairOrder(NbGraderPreprocessor):
    """The master's cells in the master's order, before nbgrader restores the locked cells."""

    def preprocess(self, nb, resources):
        repair_order(nb, master_of(self, resources))
        return nb, resources


class ReviewTampering(NbGraderPreprocessor):
    """Hostile statements commented out (peft_grader.tamper), and what was removed or flagged recorded.

    The record always overwrites the submission's own: a learner cannot plant one."""

    def preprocess(self, nb, resources):
        from peft_grader import tamper

        removed, flagged = tamper.sanitize(nb, locked_ids(master_of(self, resources)))
        nb.metadata[REVIEW_KEY] = {"removed": removed, "flagged": flagged}
        if removed:
            self.log.warning("tampering removed before grading: %s", "; ".join(removed))
        return nb, resources
