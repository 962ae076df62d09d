"""`nbgrader export` with one more column: whether a submission waits for an instructor (held for review, or
answers graded by hand), so the grades CSV shows a hold as formgrader does. grader/nbgrader_config.py makes
it the export plugin, so a plain `nbgrader export` writes it too.
"""

from __future__ import annotations

import csv

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins.export import CsvExportPlugin

COLUMN = "needs_manual_grade"


class GradesExport(CsvExportPlugin):
    def export(self, gradebook: Gradebook) -> None:
        super().export(gradebook)
        dest = self.to or "grades.csv"
        with open(dest, newline="") as f:
            reader = csv.DictReader(f)
            rows, fields = list(reader), [*(reader.fieldnames or []), COLUMN]
        for row in rows:
            try:
                submission = gradebook.find_submission(row["assignment"], row["student_id"])
            except MissingEntry:
                row[COLUMN] = ""
                continue
            row[COLUMN] = str(bool(submission.needs_manual_grade))
        with open(dest, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
