"""Feedback that shows each check's verdict, never the checks: an nbgrader preprocessor.

`nbgrader generate_feedback` renders the autograded notebook as it is: test cells with their hidden
tests, and full tracebacks through grader/checks with the grading machine's paths. Registered in
grader/nbgrader_config.py (so a plain `nbgrader generate_feedback` applies it too), `VerdictsOnly`
replaces each test cell's hidden part with a line saying what it is, drops the records the checks
published for the grader, turns every error into its message alone, wrapped (the check's name is the cell's; the message names the mistake and the fix), and
takes the grading machine's absolute paths out of every output.
"""

from __future__ import annotations

import re
import textwrap

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

HIDDEN_TESTS = re.compile(
    r"^[ \t]*### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS[ \t]*\n?", re.DOTALL | re.MULTILINE
)
WIDTH = 100  # characters per line of an error message in the feedback
HIDDEN_NOTE = "# (hidden checks: the grader ran them; the verdict is below)\n"
EVIDENCE_MIME = "application/vnd.peft-course.evidence+json"  # grader/checks/evidence.py: MIME
# An absolute path of two or more parts: /tmp/..., /work/..., /home/... (quotes, spaces and colons end it).
ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/(?:[\w.@+-]+/)+([\w.@+-]*)")


def scrub_paths(text: str) -> str:
    """Absolute paths of the grading machine shortened to their last part: '…/adapter_config.json'."""
    return ABSOLUTE_PATH.sub(lambda m: f"…/{m.group(1)}" if m.group(1) else "…/", text)


class VerdictsOnly(Preprocessor):
    """Test cells without their hidden tests, errors as one-line messages, outputs without paths."""

    enabled = Bool(True, help="nbconvert applies a preprocessor only when it is enabled").tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution"):
            cell.source = HIDDEN_TESTS.sub(HIDDEN_NOTE, cell.source)
        # the records a check published for the grader (checks.evidence) are the grader's, not feedback
        cell.outputs = [o for o in cell.get("outputs", []) if EVIDENCE_MIME not in o.get("data", {})]
        for output in cell.outputs:
            if output.get("output_type") == "error":
                output["evalue"] = scrub_paths(str(output.get("evalue", "")))
                # wrapped: feedback shows it in a <pre>, and the fix comes at the end of the message
                message = f"{output.get('ename', 'Error')}: {output['evalue']}"
                output["traceback"] = ["\n".join(textwrap.wrap(message, WIDTH)) or message]
            elif output.get("output_type") == "stream":
                output["text"] = scrub_paths(str(output.get("text", "")))
            elif "data" in output and "text/plain" in output["data"]:
                output["data"]["text/plain"] = scrub_paths(str(output["data"]["text/plain"]))
        return cell, resources
