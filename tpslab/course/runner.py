"""Running the exercises' checks: each notebook's checks register themselves on import (:mod:`.ex00` ...).

:func:`check` is what a notebook calls; :func:`run` gives the result without printing;
:func:`all_ids` lists every exercise in notebook order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tpslab.course import ex00, ex01, ex02, ex03, ex04, ex05, ex06, ex07  # noqa: F401  (they register)
from tpslab.course.checks import GRADE, RUNNERS, Mistake, Result
from tpslab.utils import TPSLabError


def run(id_: str, fn: Callable[..., Any], hidden: bool | None = None) -> Result:
    """Run the check of exercise ``id_`` on ``fn`` without printing."""
    key = id_.lower()
    if key not in RUNNERS:
        raise TPSLabError(f"no exercise {id_!r}; there are {', '.join(RUNNERS)}")
    hidden = GRADE["on"] if hidden is None else hidden
    try:
        return Result(key, "passed", RUNNERS[key](fn, hidden))
    except NotImplementedError:
        return Result(key, "not attempted")
    except Mistake as err:
        return Result(key, "failed", hint=str(err))
    except Exception as err:  # noqa: BLE001  (a student's function may raise anything)
        return Result(key, "failed", hint=f"your function raised {type(err).__name__}: {str(err)[:120]}")


def check(id_: str, fn: Callable[..., Any]) -> Result:
    """Check a student's function for exercise ``id_`` and print one line.

    Prints ``eX.Y: passed (N cases)``, ``eX.Y: not attempted`` (the function raises
    NotImplementedError) or ``eX.Y: failed: <hint>``.
    """
    result = run(id_, fn)
    if GRADE["on"]:
        GRADE["log"].append(result)
    print(result.line())
    return result


def all_ids() -> list[str]:
    """Every exercise id, in notebook order."""
    return sorted(RUNNERS, key=lambda k: tuple(int(p) for p in k[1:].split(".")))
