"""The reports after grading: the text printed (every lost point with its whole message, then per check), and
report.html, the class at a glance for the instructor."""

from __future__ import annotations

import functools
import re
import textwrap
from pathlib import Path

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
        items += (
            [
                f"held for review: {'; '.join(r.held[:3])}"
                + (f" (+{len(r.held) - 3} more)" if len(r.held) > 3 else "")
            ]
            if r.held
            else []
        )
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


# A check's message opens with the rule it enforces: "PeftMistake: [Mistake 3: Not using ...] found ... Fix: ...",
# or "[verified outside the notebook] [Mistake 4: ...] ..." where the grader decided it from the files.
RULE = re.compile(r"^(?:\w+: )?(?:\[verified outside the notebook\] )?\[([^\]]+)\]")
REPORT = "report.html"


def rule_of(message: str) -> str | None:
    """The rule a lost point's message names (a guide mistake "Mistake N: ..." or a named rule), if any."""
    found = RULE.match(message or "")
    return found.group(1) if found else None


def _check_order(lab: str) -> list[str]:
    from peft_grader.nbcourse import master_notebook

    return [
        c.metadata["nbgrader"]["grade_id"] for c in master_notebook(lab).cells if "nbgrader" in c.metadata
    ]


def mistakes_by_lab(results: list[LabResult]) -> dict[str, dict[str, list[list[str]]]]:
    """lab -> rule -> [students who made it first, students who lost points under it after an earlier
    mistake]. A student's first lost point, in the notebook's order, names the mistake they made; the
    points lost later often follow from it (a wrong target list also fails the trainable share)."""
    found: dict[str, dict[str, list[list[str]]]] = {}
    orders: dict[str, list[str]] = {}
    for r in results:
        if r.reason:
            continue
        if r.lab not in orders:
            orders[r.lab] = _check_order(r.lab)
        order = orders[r.lab]
        lost = sorted(
            (c for c in r.checks if c.score < c.max_score),
            key=lambda c: order.index(c.name) if c.name in order else len(order),
        )
        rules = list(dict.fromkeys(rule for c in lost if (rule := rule_of(c.message))))
        per_lab = found.setdefault(r.lab, {})
        for i, rule in enumerate(rules):
            per_lab.setdefault(rule, [[], []])[i > 0].append(r.student)
    return found


def _png(fig) -> str:
    import base64
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


@functools.cache
def guide_mistakes() -> tuple[str, ...]:
    """The correction guide's five mistakes as the checks name them ("Mistake 3: Not using ..."), read from
    grader/checks/__init__.py without importing the checks package (nbcourse.checks_data)."""
    from peft_grader.nbcourse import checks_data

    return tuple(f"Mistake {n}: {text}" for n, text in checks_data("__init__.py")["GUIDE_MISTAKES"].items())


def _lab_chart(lab: str, rules: dict[str, list[list[str]]], percents: list[float]) -> str:
    """Two panels: students per rule (the mistake they made first; points lost under it later), and the
    spread of scores. The guide's five mistakes are always shown, so a zero reads as a zero."""
    from labutils.plots import _plt

    plt = _plt()
    shown = [*guide_mistakes(), *sorted(r for r in rules if not r.startswith("Mistake "))]
    first = [len(rules.get(r, [[], []])[0]) for r in shown]
    later = [len(rules.get(r, [[], []])[1]) for r in shown]
    labels = [textwrap.shorten(r, 60, placeholder="…") for r in shown]
    height = 1.5 + 0.38 * len(shown)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, height), gridspec_kw={"width_ratios": [2.2, 1]})
    rows = range(len(shown))
    made = left.barh(rows, first, color="#c0392b", label="made it (their first lost point)")
    left.barh(rows, later, left=first, color="#f0b27a", label="lost points under it after an earlier mistake")
    left.bar_label(made, labels=[str(n) if n else "" for n in first], label_type="center", color="white")
    left.set_yticks(list(rows), labels, fontsize=8)
    left.invert_yaxis()
    left.set_xlim(0, max([a + b for a, b in zip(first, later, strict=True)] + [1]) * 1.1)
    left.set_xlabel("students")
    left.xaxis.get_major_locator().set_params(integer=True)
    left.set_title(f"{lab}: mistakes made")
    fig.legend(loc="lower left", ncols=2, fontsize=8, frameon=False)
    right.hist(
        percents, bins=[0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100.001], color="#2a7ab0", edgecolor="white"
    )
    right.set_xlabel("score (% of the autograded points)")
    right.set_ylabel("students")
    right.yaxis.get_major_locator().set_params(integer=True)
    right.set_title(f"scores ({len(percents)} graded)")
    fig.tight_layout(rect=(0, 0.35 / height, 1, 1))
    return _png(fig)


def write_html(results: list[LabResult], out_dir: Path) -> Path:
    """report.html beside grades.csv: per lab the mistakes made and the spread of scores, the checks that
    failed most with one example message each, and the submissions that could not be graded normally.
    One self-contained page: the charts are embedded PNGs, no scripts, no links out."""
    import html
    from collections import Counter

    from peft_grader.feedback import scrub_paths

    esc = html.escape
    by_lab = mistakes_by_lab(results)
    labs = list(dict.fromkeys(r.lab for r in results))
    graded = [r for r in results if not r.reason]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>PEFT course: class report</title>",
        "<style>body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;"
        "text-align:left;vertical-align:top}th{background:#f3f3f3}img{max-width:100%}.n{text-align:right}"
        "code{font-size:90%}</style></head><body>",
        "<h1>Class report</h1>",
        f"<p>{len({r.student for r in results})} students, {len(labs)} labs, {len(graded)} submissions graded. "
        "A student's first lost point names the mistake they made; later lost points often follow from it.</p>",
    ]
    for lab in labs:
        mine = [r for r in graded if r.lab == lab]
        if not mine:
            continue
        percents = [100 * r.score / r.max_score if r.max_score else 100.0 for r in mine]
        rules = by_lab.get(lab, {})
        parts.append(f"<h2 id='lab-{esc(lab)}'>{esc(lab)}</h2>")
        parts.append(
            f"<img alt='{esc(lab)}: mistakes made, and scores' src='data:image/png;base64,"
            f"{_lab_chart(lab, rules, percents)}'>"
        )
        if rules:
            parts.append(
                "<table><tr><th>rule</th><th class='n'>made it</th><th class='n'>later</th><th>who made it</th></tr>"
            )
            for rule, (first, later) in sorted(rules.items(), key=lambda kv: -len(kv[1][0])):
                who = ", ".join(first[:8]) + (f" and {len(first) - 8} more" if len(first) > 8 else "")
                parts.append(
                    f"<tr><td>{esc(rule)}</td><td class='n'>{len(first)}</td><td class='n'>{len(later)}</td>"
                    f"<td>{esc(who)}</td></tr>"
                )
            parts.append("</table>")
    failures: Counter = Counter()
    example: dict[tuple[str, str], str] = {}
    for r in graded:
        for c in r.checks:
            if c.score < c.max_score:
                failures[r.lab, c.name] += 1
                example.setdefault((r.lab, c.name), c.message)
    parts.append("<h2 id='most-failed'>Checks that failed most</h2>")
    parts.append("<table><tr><th>lab</th><th>check</th><th class='n'>failed</th><th>one message</th></tr>")
    for (lab, name), count in failures.most_common(15):
        message = textwrap.shorten(scrub_paths(example[lab, name]), 400, placeholder=" …") or "no output"
        parts.append(
            f"<tr><td>{esc(lab)}</td><td><code>{esc(name)}</code></td><td class='n'>{count}</td>"
            f"<td>{esc(message)}</td></tr>"
        )
    parts.append("</table>")
    held = [r for r in results if r.held]
    parts.append("<h2 id='held'>Held for review</h2>")
    if held:
        parts.append(
            "<p>Graded as usual, and waiting for you: each used something no exercise needs (code built from a "
            "string or written while the notebook ran, frames, IPython's or the interpreter's hooks, ctypes, the "
            "garbage collector's lists, a thread left running) or changed a file after its check read it. Their "
            "autograded cells are marked for manual grading in formgrader; grades.csv says "
            "<code>needs_manual_grade</code>. Read the cells named before you accept the score.</p>"
        )
        parts.append("<table><tr><th>student</th><th>lab</th><th class='n'>score</th><th>evidence</th></tr>")
        for r in held:
            evidence = "<br>".join(esc(scrub_paths(h)) for h in r.held)
            parts.append(
                f"<tr><td>{esc(r.student)}</td><td>{esc(r.lab)}</td><td class='n'>{r.score:g}/{r.max_score:g}</td>"
                f"<td>{evidence}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>None.</p>")
    odd = [r for r in results if r.reason and r.reason != "missing submission"]
    missing = Counter(r.lab for r in results if r.reason == "missing submission")
    parts.append("<h2 id='not-graded'>Submissions that could not be graded normally</h2>")
    if odd:
        parts.append("<table><tr><th>student</th><th>lab</th><th class='n'>score</th><th>reason</th></tr>")
        for r in odd:
            parts.append(
                f"<tr><td>{esc(r.student)}</td><td>{esc(r.lab)}</td><td class='n'>{r.score:g}/{r.max_score:g}</td>"
                f"<td>{esc(scrub_paths(r.reason))}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>None: every submission was graded normally.</p>")
    if missing:
        parts.append(
            "<p>Missing submissions: " + ", ".join(f"{esc(lab)} {n}" for lab, n in missing.items()) + ".</p>"
        )
    parts.append("</body></html>")
    target = Path(out_dir) / REPORT
    target.write_text("\n".join(parts))
    return target
