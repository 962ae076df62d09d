"""The report printed after grading: every lost point with its whole message, then per check."""

from __future__ import annotations

import textwrap

from peft_grader.scores import LabResult


def summary_table(results: list[LabResult], width: int = 132) -> str:
    """Per student and lab: the score and every lost point with its whole message (wrapped, never cut:
    the fix is at the end); then per check: how many passed and failed."""
    student_width = max([len("student"), *(len(r.student) for r in results)])
    head = f"{'student':<{student_width}} {'lab':<18} {'score':>12}  "
    indent = " " * len(head)
    lines = [head + "lost points (+Nm: graded by hand)"]
    for r in results:
        score = f"{r.score:g}/{r.max_score:g}" + (f" +{r.manual_points:g}m" if r.manual_points else "")
        lost = (
            [r.reason]
            if r.reason
            else [
                f"{c.name} -{c.max_score - c.score:g}: {c.message or 'no output'}"
                for c in r.checks
                if c.score < c.max_score
            ]
        )
        first = f"{r.student:<{student_width}} {r.lab:<18} {score:>12}  "
        text_width = max(40, width - len(indent))
        items = (lost or ["-"]) + ([f"review: {r.review}"] if r.review else [])
        wrapped = [textwrap.wrap(item, text_width) or [item] for item in items]
        body = [line for item in wrapped for line in item]
        lines.append(first + body[0])
        lines += [indent + line for line in body[1:]]
    per_check: dict[tuple[str, str], list[int]] = {}
    for r in results:
        for c in r.checks:
            passed_failed = per_check.setdefault((r.lab, c.name), [0, 0])
            passed_failed[c.score < c.max_score] += 1
    lines += ["", f"{'lab':<18} {'check':<24} {'passed':>6} {'failed':>6}"]
    lines += [f"{lab:<18} {name:<24} {p:>6} {f:>6}" for (lab, name), (p, f) in per_check.items()]
    return "\n".join(lines)
