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


# A check's message: "[rule] what was found. Fix: what to do", after the error's class name.
MESSAGE_PARTS = re.compile(
    r"^(?:\w+: )?(?:\[verified outside the notebook\] )?(?:\[([^\]]+)\] )?(.*?)(?:\s*Fix: (.*))?$", re.DOTALL
)
NOTE_ID = "tutor-note"


class TutorNote(Preprocessor):
    """A note from a tutor at the top of nbgrader's feedback: the lab's score, then one line per lost point,
    the mistake and the fix, linked to the section of the lab that teaches it.

    It runs after nbgrader's GetGrades (the scores, from the gradebook) and VerdictsOnly. The messages come
    from the grade's results (`labutils grade` writes results/<lab>/<student>.json, with the checks the
    grader decided outside the notebook), else from the test cells' errors. nbgrader's own feedback file
    stays what it is, with this note as its first cell."""

    enabled = Bool(True, help="nbconvert applies a preprocessor only when it is enabled").tag(config=True)

    def preprocess(self, nb, resources):
        import html

        from nbformat.v4 import new_markdown_cell

        meta = resources.get("nbgrader", {})
        saved = self._saved_messages(meta)
        lines, headed = [], None
        for index, cell in enumerate(nb.cells):
            grade = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "markdown" and re.match(r"^#{1,4} ", cell.source):
                headed = index  # the section the following exercise and its test belong to
            if cell.cell_type != "code" or not grade.get("grade") or grade.get("solution"):
                continue
            lost = float(grade.get("points", 0)) - float(grade.get("score") or 0)
            if lost <= 0:
                continue
            message = (
                saved.get(grade["grade_id"]) or _error_of(cell) or "this check did not pass (no message)"
            )
            rule, found, fix = MESSAGE_PARTS.match(scrub_paths(message)).groups()
            anchor = html.escape(f"learn-{grade['grade_id']}", quote=True)
            if headed is not None:
                nb.cells[headed].source = f'<a id="{anchor}"></a>\n\n' + nb.cells[headed].source
            title = html.escape(rule or grade["grade_id"])
            link = f'<a href="#{anchor}">{title}</a>' if headed is not None else title
            lines.append(
                f"<li><b>-{lost:g}</b> on <code>{html.escape(grade['grade_id'])}</code>: {link}. "
                f"{html.escape(found.strip())}"
                + (f"<br><b>Fix:</b> {html.escape(fix.strip())}" if fix else "")
                + "</li>"
            )
        score, total = meta.get("score"), meta.get("max_score")
        head = (
            f"<h2>Your score: {score:g} of {total:g} points</h2>"
            if score is not None and total
            else "<h2>Your work</h2>"
        )
        body = (
            f"<p>What cost you points, in the order the lab teaches it, each with its fix (the link opens the "
            f"section that teaches it):</p><ul>{''.join(lines)}</ul>"
            if lines
            else "<p>Every autograded check passed: nothing to fix. Well done.</p>"
        )
        nb.cells.insert(0, new_markdown_cell(f'<div id="{NOTE_ID}">\n\n{head}\n\n{body}\n\n</div>'))
        return nb, resources

    def _saved_messages(self, meta: dict) -> dict[str, str]:
        import json
        from pathlib import Path

        from nbgrader.coursedir import CourseDirectory

        if not {"assignment", "student"} <= set(meta):
            return {}
        saved = (
            Path(CourseDirectory(config=self.config).root)
            / "results"
            / meta["assignment"]
            / f"{meta['student']}.json"
        )
        try:
            return {
                c["name"]: c["message"] for c in json.loads(saved.read_text())["checks"] if c.get("message")
            }
        except (OSError, ValueError, KeyError, TypeError):
            return {}


def _error_of(cell) -> str:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"
    return ""
