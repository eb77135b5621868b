"""``tpslab course grade``: run the exercises of every submission, write grades.csv and feedback.

A submission folder holds one folder per student with any of the numbered notebooks (``.ipynb``,
as the student build wrote them). Grading runs, in a fresh namespace per notebook, the cells that
import the course kit, the cells tagged ``exercise`` and the cells that call ``check``/``answer``
(not the whole notebook: no training, seconds per student), with the hidden cases on. Every
exercise and question is one column of ``grades.csv`` (1 passed, 0 otherwise; missing notebooks
count 0); ``feedback/<student>.txt`` has each check's line.
"""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import nbformat

from tpslab.course.checks import Result, grade_mode
from tpslab.course.questions import HASHES
from tpslab.course.runner import all_ids
from tpslab.utils import TPSLabError


def _graded_cells(nb: nbformat.NotebookNode) -> list[str]:
    keep = []
    for cell in nb.cells:
        src = cell.source
        if cell.cell_type == "code" and ("exercise" in cell.metadata.get("tags", []) or "tpslab.course" in src
                                         or "check(" in src or "answer(" in src):
            keep.append(src)
    return keep


def grade_notebook(path: Path) -> tuple[list[Result], str]:
    """Run one notebook's exercise and check cells in grade mode; return the results and what they printed."""
    nb = nbformat.read(path, as_version=4)
    namespace: dict = {"__name__": "__course__"}
    printed = io.StringIO()
    with grade_mode() as log, contextlib.redirect_stdout(printed):
        for src in _graded_cells(nb):
            code = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))
            try:
                exec(compile(code, str(path), "exec"), namespace)  # noqa: S102  (the teacher runs the students' code)
            except Exception as err:  # noqa: BLE001
                print(f"a cell raised {type(err).__name__}: {str(err)[:120]}")
        results = list(log)
    return results, printed.getvalue()


def columns() -> list[str]:
    """Every exercise and question id, notebook by notebook."""
    ids = all_ids() + list(HASHES)
    return sorted(ids, key=lambda k: (int(k[1:].split(".")[0]), k[0], int(k.split(".")[1])))


def grade(submissions: str | Path, out: str | Path | None = None) -> Path:
    """Grade every student folder under ``submissions``; write ``grades.csv`` and ``feedback/`` into ``out``.

    Returns:
        The path of ``grades.csv``.
    """
    submissions = Path(submissions)
    students = sorted(p for p in submissions.iterdir() if p.is_dir() and p.name != "feedback") \
        if submissions.is_dir() else []
    if not students:
        raise TPSLabError(f"no student folders in {submissions} (one folder per student, holding notebooks)")
    out = Path(out) if out else submissions
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    cols, rows = columns(), []
    for student in students:
        row, lines = dict.fromkeys(cols, 0), []
        for path in sorted(student.glob("[0-9][0-9]_*.ipynb")):
            results, printed = grade_notebook(path)
            lines += [f"== {path.name}", printed.rstrip()]
            for r in results:
                row[r.id] = int(r.status == "passed")
        row = {"student": student.name, **row, "total": sum(row.values())}
        rows.append(row)
        (out / "feedback" / f"{student.name}.txt").write_text(
            "\n".join(lines + [f"total: {row['total']} of {len(cols)}"]) + "\n")
    target = out / "grades.csv"
    with target.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["student", *cols, "total"])
        writer.writeheader()
        writer.writerows(rows)
    return target
