"""The course kit: the two builds, every check on stubs, solutions and planted mistakes, and grading."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pytest
import torch

from tpslab.course.build import BEGIN, build, sources
from tpslab.course.grade import columns, grade, grade_notebook
from tpslab.course.questions import HASHES
from tpslab.course.runner import all_ids, run
from tpslab.utils import TPSLabError


def _exercise_cells(nb) -> list[str]:
    return [c.source for c in nb.cells if "exercise" in c.metadata.get("tags", [])]


def _solutions() -> list[str]:
    return [line.strip() for py in sources() for src in _exercise_cells(jupytext.read(py))
            for line in src.split(BEGIN)[1].split("### END SOLUTION")[0].splitlines() if line.strip()]


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("course") / "student"
    build(out, student=True)
    return out


def test_every_notebook_has_two_exercises_and_two_questions():
    ids = [i for py in sources() for i in __import__("re").findall(r'(?:check|answer)\("([eq]\d\.\d)"', py.read_text())]
    assert sorted(set(ids)) == sorted(columns()) and len(all_ids()) >= 16 and len(HASHES) >= 16
    for py in sources():
        for src in _exercise_cells(jupytext.read(py)):
            assert len(src.split(BEGIN)[1].split("### END SOLUTION")[0].strip().splitlines()) < 12


def test_student_build_has_no_solution_and_no_answer(student: Path):
    text = "\n".join(p.read_text() for p in sorted(student.glob("*.ipynb")))
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    for line in _solutions():
        if not line.startswith("#"):
            assert line not in text, line
    for id_ in HASHES:
        assert f"{id_.replace('.', '_')} = None  # your answer" in text
    for nb in (nbformat.read(p, as_version=4) for p in student.glob("*.ipynb")):
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_build_refuses_to_overwrite(student: Path):
    with pytest.raises(TPSLabError, match="--force"):
        build(student, student=True)


def test_checks_on_stubs_and_on_solutions(student: Path, tmp_path: Path):
    for path in sorted(student.glob("*.ipynb")):
        results, printed = grade_notebook(path)
        assert {r.status for r in results} == {"not attempted"}, printed
    teacher = build(tmp_path / "teacher", student=False, execute=False)
    for path in teacher:
        results, printed = grade_notebook(path)
        assert len(results) == 4 and {r.status for r in results} == {"passed"}, printed


def _wrong() -> dict[str, tuple[object, str]]:
    import torch.nn.functional as F
    from scipy import ndimage  # noqa: F401
    return {
        "e0.1": (lambda v, t, tau: (v @ t.T / tau).softmax(-1)[:, 1], "normalise v and t"),
        "e0.2": (lambda z, t, tau: (F.normalize(z, dim=-1) @ F.normalize(t, dim=-1).T / tau).softmax(1)[..., 1],
                 "not over the patches"),
        "e1.1": (lambda m: m, "validate still accepts it"),
        "e1.2": (lambda m, a: ("mask of an anomalous sample marks no pixel" if a == 1 and (m > 0.5).sum() == 0 else
                               f"mask of a normal sample marks {int((m > 0.5).sum())} pixel(s)"
                               if a == 0 and (m > 0.5).sum() else None), ">= 0.5"),
        "e2.1": (lambda p, m: (1 - 2 * (p * m).flatten(1).sum(1) / (p.flatten(1).sum(1) + m.flatten(1).sum(1)))
                 .mean(), "without the +1"),
        "e2.2": (lambda p, m, g: (-p.gather(1, m.long()[:, None]).log()).mean(), "that is the cross-entropy"),
        "e3.1": (lambda y, s: float(np.mean(s[y > 0.5][:, None] > s[y <= 0.5][None])), "ties counted as 0"),
        "e3.2": (lambda m, s, lim: __import__("tpslab.metrics").metrics.aupro(m, s, lim) * lim, "divide the area"),
        "e4.1": (lambda a, b: {k: (a.get(k), b.get(k)) for k in {*a, *b} if a.get(k) != b.get(k)}, "full config"),
        "e4.2": (lambda t, r, b, m: float((t[t.row == b][m].values - t[t.row == r][m].values).mean()), "row minus"),
        "e5.1": (lambda pw, s, z: pw.ln_mid(pw.ln_shunt(s) + pw.customise(pw.ln_shunt(s), pw.ln_patches(z),
                                                                          pw.ln_shunt(s))[0]), "t_s as the value"),
        "e5.2": (lambda pw, s, z: pw.customise(s, z, z)[1], "normed inputs"),
        "e6.1": (lambda y, s, n, seed, lv: (0.0, 1.0), "resample_counts"),
        "e6.2": (_pixel_resampling, "resamples pixels instead of images"),
        "e7.1": (lambda s, w, g: _mean_agg(s, w, g), "arithmetic mean"),
        "e7.2": (lambda f: _msm_self(f), "leave image i out"),
    }


def _pixel_resampling(masks, maps, n_boot, seed):
    from tpslab.metrics import pixel_auroc
    from tpslab.metrics.bootstrap import interval
    rng = np.random.default_rng(seed)
    m, s = masks.ravel(), maps.ravel()
    stats = [pixel_auroc(m[i], s[i]) for i in (rng.integers(0, m.size, m.size) for _ in range(n_boot))]
    return interval(np.array(stats), 0.95)


def _mean_agg(s, w, g):
    from tpslab.course.ex07 import _mean_aggregation
    return _mean_aggregation(s, w, g)


def _msm_self(f):
    from tpslab.course.ex07 import _msm_with_self
    return _msm_with_self(f)


@pytest.mark.parametrize("id_", sorted(_wrong()))
def test_a_planted_mistake_gets_its_hint(id_: str):
    fn, hint = _wrong()[id_]
    result = run(id_, fn, hidden=False)
    assert result.status == "failed" and hint in result.hint, result.line()


def test_every_exercise_has_a_planted_mistake():
    assert sorted(_wrong()) == all_ids()


def test_grading_three_submissions(student: Path, tmp_path: Path):
    subs = tmp_path / "subs"
    teacher = build(tmp_path / "teacher", student=False, execute=False)
    (subs / "ada").mkdir(parents=True)
    (subs / "bob").mkdir()
    (subs / "cy").mkdir()
    for path in teacher:
        shutil.copy(path, subs / "ada" / path.name)
        shutil.copy(student / path.name if path.name[:2] in ("00", "01", "02", "03") else path, subs / "bob" / path.name)
        shutil.copy(student / path.name, subs / "cy" / path.name)
    rows = {r["student"]: r for r in csv.DictReader(grade(subs).open())}
    n = len(columns())
    assert [int(rows[s]["total"]) for s in ("ada", "bob", "cy")] == [n, n // 2, 0]
    assert rows["bob"]["e0.1"] == "0" and rows["bob"]["e7.2"] == "1"
    assert "e0.1: not attempted" in (subs / "feedback" / "cy.txt").read_text()


def test_checks_are_fast():
    import time
    start = time.perf_counter()
    for id_ in all_ids():
        run(id_, lambda *a: (_ for _ in ()).throw(NotImplementedError()))
    assert time.perf_counter() - start < 16
    assert torch.get_num_threads() >= 1


def test_hidden_cases_run_only_in_grade_mode():
    ns: dict = {}
    for py in sources():
        for src in _exercise_cells(jupytext.read(py)):
            if "def " in src:
                exec(src, ns)  # noqa: S102  (the reference solutions)
    visible, hidden = run("e6.1", ns["auroc_interval"], hidden=False), run("e6.1", ns["auroc_interval"], hidden=True)
    assert visible.status == hidden.status == "passed" and hidden.cases > visible.cases
    assert run("e2.1", ns["dice"]).cases == visible_cases("e2.1", ns["dice"])


def visible_cases(id_: str, fn) -> int:
    return run(id_, fn, hidden=False).cases


def test_the_command_line(tmp_path: Path, capsys):
    from tpslab.cli import main

    out = tmp_path / "s"
    assert main(["course", "build", "--student", str(out), "--only", "00"]) == 0
    assert [p.name for p in out.iterdir()] == ["00_quickstart.ipynb"]
    assert main(["course", "build", "--student", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    (tmp_path / "subs" / "eve").mkdir(parents=True)
    shutil.copy(out / "00_quickstart.ipynb", tmp_path / "subs" / "eve")
    assert main(["course", "grade", str(tmp_path / "subs"), "--out", str(tmp_path / "g")]) == 0
    assert (tmp_path / "g" / "grades.csv").read_text().splitlines()[1].startswith("eve,0,")


def test_teacher_cells_are_dropped():
    from tpslab.course.build import student_notebook

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["teacher"]}),
                                         nbformat.v4.new_code_cell("y = 2")])
    assert [c.source for c in student_notebook(nb).cells] == ["y = 2"]
