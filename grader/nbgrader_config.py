# nbgrader configuration of the PEFT course. Instructors can run nbgrader (or formgrader) from this
# folder; `labutils release/grade/check` load this file and only move the course root elsewhere.
import os
from pathlib import Path

c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)
here = Path(__file__).resolve().parent

c.CourseDirectory.course_id = "peft-course"
c.CourseDirectory.root = str(here)
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"

# Per-cell timeout. nbgrader's default is 30 s; loading a model or a training cell on a 2-core CPU
# can take longer, and a cell that times out scores 0 while the rest of the notebook still runs.
c.Execute.timeout = 180
c.ExecutePreprocessor.timeout = 180

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Deleted test cells are put back (and score) rather than silently scoring nothing.
c.OverwriteCells.add_missing_cells = True

# Our steps in nbgrader's own autograde pipeline (peft_grader.preprocessors), so `nbgrader autograde` run by
# hand applies them as `labutils grade` does: the master's cell order repaired and tampering removed before
# nbgrader restores the locked cells, then every kernel started in the grading sandbox with a wall budget.
from nbgrader.converters.autograde import Autograde  # noqa: E402
from nbgrader.preprocessors import Execute  # noqa: E402

from peft_grader.preprocessors import RepairOrder, ReviewTampering  # noqa: E402
from peft_grader.sandbox_execute import SandboxExecute  # noqa: E402

_defaults = Autograde.class_traits()
c.Autograde.sanitize_preprocessors = [
    RepairOrder,
    ReviewTampering,
    *_defaults["sanitize_preprocessors"].default(),
]
c.Autograde.autograde_preprocessors = [
    SandboxExecute if p is Execute else p for p in _defaults["autograde_preprocessors"].default()
]
c.SandboxExecute.budget = 900  # wall seconds per notebook (`labutils grade --budget` sets its own)

# Feedback shows each check's verdict (name, points, message), never the hidden tests, a traceback into
# grader/checks or the grading machine's paths (peft_grader.feedback).
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import GetGrades  # noqa: E402

from peft_grader.feedback import TutorNote, VerdictsOnly  # noqa: E402

c.GenerateFeedback.preprocessors = [GetGrades, CSSHTMLHeaderPreprocessor, VerdictsOnly, TutorNote]

# The grades CSV says which submissions wait for an instructor (held for review, answers graded by hand).
from peft_grader.export import GradesExport  # noqa: E402

c.ExportApp.plugin_class = GradesExport

# Hidden test cells import the checks (`from checks.lab04_qlora import kernel ...`): the kernel inherits this
# process's environment.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(here), os.environ.get("PYTHONPATH")) if p)
