"""The numbered notebooks: each .py (jupytext py:percent) matches its committed .ipynb, and both read well.

Fast checks only; executing the notebooks is nbval's job (`make nbval`), and `tpslab reproduce`'s
preflight is checked here on the profiles that cannot run on this machine.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import jupytext
import nbformat
import pytest

from tpslab.profiles import load_profile
from tpslab.reports import paper_numbers
from tpslab.runs.reproduce import preflight
from tpslab.utils import TPSLabError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
EXPECTED = ["00_quickstart", "01_data_prep", "02_train", "03_evaluate", "04_ablations", "05_prompt_attention",
            "06_paper_tables", "07_baselines"]


def _code(nb) -> list[str]:
    return [c.source.strip() for c in nb.cells if c.cell_type == "code"]


def test_the_numbered_notebooks_exist_in_both_forms():
    assert [p.stem for p in SOURCES] == EXPECTED
    for py in SOURCES:
        assert py.with_suffix(".ipynb").is_file(), f"{py.name}: no {py.with_suffix('.ipynb').name} (run `python -m tpslab.runs.reproduce sync`)"


@pytest.mark.parametrize("py", SOURCES, ids=lambda p: p.stem)
def test_py_and_ipynb_have_the_same_code(py: Path):
    paired, stored = jupytext.read(py), nbformat.read(py.with_suffix(".ipynb"), as_version=4)
    assert _code(paired) == _code(stored), (f"{py.name} and its .ipynb differ in code: rebuild it with "
                                            f"`python -m tpslab.runs.reproduce sync {py.stem[:2]}`")
    assert "py:percent" in json.dumps(paired.metadata.get("jupytext", {}))


@pytest.mark.parametrize("py", SOURCES, ids=lambda p: p.stem)
def test_notebook_header(py: Path):
    """The opening cell says what a student needs, how long to study it and how long it computes."""
    first = jupytext.read(py).cells[0]
    assert first.cell_type == "markdown"
    for part in ("Prerequisites:", "Study time:", "Compute time"):
        assert part in first.source, f"{py.name}: the opening cell has no {part!r}"


@pytest.mark.parametrize("py", SOURCES, ids=lambda p: p.stem)
def test_markdown_agrees_with_the_py_source(py: Path):
    """The stored .ipynb carries the .py's text too (jupytext --update keeps outputs, refreshes text)."""
    md = lambda nb: [c.source.strip() for c in nb.cells if c.cell_type == "markdown"]  # noqa: E731
    assert md(jupytext.read(py)) == md(nbformat.read(py.with_suffix(".ipynb"), as_version=4)), (
        f"{py.name}: its .ipynb has other text: `jupytext --update --to notebook notebooks/{py.name}`")


@pytest.mark.parametrize("py", SOURCES, ids=lambda p: p.stem)
def test_notebook_shape(py: Path):
    nb = nbformat.read(py.with_suffix(".ipynb"), as_version=4)
    assert nb.cells[0].cell_type == "markdown" and "what you will learn" in nb.cells[0].source.lower()
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    for stmt in ast.parse(params[0].source).body:  # plain literals only
        assert isinstance(stmt, ast.Assign), f"parameters cell: {ast.unparse(stmt)}"
        ast.literal_eval(stmt.value)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert any("NBVAL_CHECK_OUTPUT" in c for c in _code(nb)), "no cell checked by nbval"


@pytest.mark.parametrize("py", SOURCES, ids=lambda p: p.stem)
def test_committed_ipynb_is_executed_and_clean(py: Path):
    nb = nbformat.read(py.with_suffix(".ipynb"), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "run `python -m tpslab.runs.reproduce sync`"
    assert "papermill" not in nb.metadata and all("papermill" not in c.metadata for c in nb.cells)
    for c in code:
        errors = [o for o in c.outputs if o.output_type == "error"]
        assert not errors, f"stored error output: {errors[0].ename}"
        if "NBVAL_CHECK_OUTPUT" in c.source:
            assert c.outputs, f"checked cell without stored output: {c.source.splitlines()[1][:60]}"
        for o in c.outputs:  # what a reader sees: no machine's paths, no widget warnings
            text = o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
            for bad in ("/work/", "/root/", ".venv/", "/tmp/", "IProgress not found", "Traceback"):
                assert bad not in text, f"{py.name}: a stored output shows {bad!r}: {text[:200]!r}"


@pytest.mark.parametrize("py", SOURCES, ids=lambda p: p.stem)
def test_notebooks_stay_thin(py: Path):
    """No function or class in a notebook, except the short ones of cells tagged 'exercise' (a student's answer)."""
    for cell in jupytext.read(py).cells:
        if cell.cell_type != "code":
            continue
        exercise = "exercise" in cell.metadata.get("tags", [])
        tree = ast.parse("\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                assert exercise, f"{node.name}: define functions in tpslab, not in a notebook (exercises excepted)"
                assert node.end_lineno - node.lineno < 16, f"{node.name} is too long for an exercise"


@pytest.mark.parametrize("py", SOURCES, ids=lambda p: p.stem)
def test_every_figure_is_explained_and_saved(py: Path):
    nb = jupytext.read(py)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "save_figure(" in cell.source:
            before = nb.cells[i - 1]
            assert before.cell_type == "markdown" and "what to see" in before.source.lower(), (
                f"{py.name}: the figure cell {i} needs a 'What to see' sentence just before it")


@pytest.mark.parametrize("name", ["course", "paper"])
def test_big_profiles_stop_with_a_clear_message(name: str, tmp_path: Path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))  # empty caches:
    monkeypatch.setenv("HOME", str(tmp_path))  # ~/.cache/clip too; the weights are missing
    profile = load_profile(name)
    with pytest.raises(TPSLabError) as err:
        preflight(profile, tmp_path)
    text = str(err.value)
    assert f"profile {name!r} cannot run here" in text and "CLIP weights" in text
    assert f"`tpslab prepare {profile.data.train} " in text


def test_smoke_profile_needs_nothing_from_outside(tmp_path: Path):
    preflight(load_profile("smoke"), tmp_path)


def test_published_numbers_are_complete():
    assert set(paper_numbers.TABLE1) == {"mvtec", "visa", "mpdd", "btad", "headct", "brainmri", "br35h"}
    assert len(paper_numbers.TABLE2) == 10
    for table in (paper_numbers.TABLE1, paper_numbers.TABLE2):
        for row in table.values():
            assert set(row) == set(paper_numbers.METHODS)
            assert all(0 <= v <= 100 for pair in row.values() for v in pair)
    assert paper_numbers.TABLE1["mvtec"]["TPS"] == (96.4, 98.4) and paper_numbers.TABLE2["msd"]["TPS"] == (93.3, 71.2)
    assert "AAAI 2025" in paper_numbers.SOURCE
