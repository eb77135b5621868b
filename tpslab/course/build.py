"""``tpslab course build``: the student build (solutions out) and the teacher build (everything, executed).

The jupytext sources ``notebooks/NN_*.py`` are the one source. A code cell tagged ``exercise``
holds its solution between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (nbgrader's markers).
The student build replaces a region inside a function with ``raise NotImplementedError("E3.1: ...")``
and a top-level region (a question's answer) with ``name = None``; it drops cells tagged
``teacher`` and clears every output. The teacher build is the notebooks as they are, executed
with papermill unless asked not to.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat

from tpslab.utils import TPSLabError

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
_ID = re.compile(r"""(?:check|answer)\(\s*["']([eq]\d+\.\d+)["']""")


def sources(folder: Path = NOTEBOOKS) -> list[Path]:
    """The numbered jupytext sources, in order."""
    found = sorted(Path(folder).glob("[0-9][0-9]_*.py"))
    if not found:
        raise TPSLabError(f"no notebooks/NN_*.py in {folder}")
    return found


def strip_solution(source: str, id_: str) -> str:
    """One exercise cell's source with every solution region replaced by its stub."""
    out, inside = [], False
    for line in source.splitlines():
        if line.strip() == BEGIN:
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            if indent:
                out.append(f'{indent}raise NotImplementedError("{id_.upper()}: write this function")')
            continue
        if line.strip() == END:
            inside = False
            continue
        if inside:
            if not indent and re.match(r"^[A-Za-z_]\w*\s*=", line):
                out.append(line.split("=")[0].rstrip() + " = None  # your answer")
            continue
        out.append(line)
    if inside:
        raise TPSLabError(f"{id_}: {BEGIN} without {END}")
    return "\n".join(out)


def exercise_id(cells: list, i: int) -> str:
    """The id of the exercise cell ``i``: from its own answer(...) call or the next check(...) cell."""
    for cell in cells[i:]:
        if cell.cell_type == "code" and (m := _ID.search(cell.source)):
            return m.group(1)
    return "exercise"


def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student version of a notebook (a copy): solutions stubbed, teacher cells out, outputs cleared."""
    nb = nbformat.from_dict(nb)
    cells = [c for c in nb.cells if "teacher" not in c.metadata.get("tags", [])]
    for i, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        if "exercise" in cell.metadata.get("tags", []):
            cell.source = strip_solution(cell.source, exercise_id(cells, i))
        elif BEGIN in cell.source:
            raise TPSLabError(f"a cell with {BEGIN} is not tagged 'exercise': {cell.source[:60]!r}")
        cell.outputs, cell.execution_count = [], None
    nb.cells = cells
    return nb


def _read(py: Path) -> nbformat.NotebookNode:
    import jupytext
    nb = jupytext.read(py)
    nb.metadata.pop("jupytext", None)
    return nb


def build(out: str | Path, student: bool, force: bool = False, execute: bool = True,
          folder: Path = NOTEBOOKS, only: list[str] | None = None) -> list[Path]:
    """Write the student or teacher build of every numbered notebook into ``out``.

    Args:
        out: the folder to write (refused if it exists, unless ``force``).
        student: the student build; else the teacher build.
        force: replace an existing ``out``.
        execute: teacher build only: run each notebook with papermill (cwd ``out``).
        folder: where the jupytext sources are.
        only: notebook numbers to build, e.g. ["00", "03"] (default: all).

    Returns:
        The notebooks written.
    """
    out = Path(out)
    if out.exists():
        if not force:
            raise TPSLabError(f"{out} exists: pass --force to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    written = []
    for py in sources(folder):
        if only and py.stem[:2] not in only:
            continue
        nb, target = _read(py), out / f"{py.stem}.ipynb"
        if student:
            nb = student_notebook(nb)
        nbformat.write(nb, target)
        if not student and execute:
            import papermill
            papermill.execute_notebook(str(target), str(target), cwd=str(out), progress_bar=False)
        written.append(target)
    return written
