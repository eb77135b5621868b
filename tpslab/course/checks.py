"""The exercise checks: ``check("e3.1", student_fn)`` prints one line and returns what happened.

Every exercise registers a runner (:func:`exercise`) that builds its own seeded inputs, runs the
library's own function on them, runs the student's function on the same inputs and compares the
two with :func:`torch.testing.assert_close`. A mismatch is explained by trying the known mistakes
of that exercise (each a wrong variant of the computation) and naming the one that matches.

Hidden cases (other seeds and edge cases: an empty mask, an all-normal class) run only when
:data:`GRADE` is on, which ``tpslab course grade`` sets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

GRADE = {"on": False, "log": []}  # grade mode: hidden cases, and every result appended to "log"
Runner = Callable[[Callable[..., Any], bool], int]
RUNNERS: dict[str, Runner] = {}
TITLES: dict[str, str] = {}


class Mistake(Exception):
    """A student's answer disagrees with the reference; the message is the hint."""


@dataclass
class Result:
    """The outcome of one check: ``status`` is "passed", "not attempted" or "failed"."""

    id: str
    status: str
    cases: int = 0
    hint: str = ""

    def line(self) -> str:
        """The one line a check prints."""
        if self.status == "passed":
            return f"{self.id}: passed ({self.cases} case{'s' if self.cases != 1 else ''})"
        return f"{self.id}: {self.status}" + (f": {self.hint}" if self.hint else "")


def exercise(id_: str, title: str) -> Callable[[Runner], Runner]:
    """Register ``runner(student_fn, hidden) -> cases`` as the check of exercise ``id_``."""
    def wrap(runner: Runner) -> Runner:
        RUNNERS[id_], TITLES[id_] = runner, title
        return runner
    return wrap


def seeds(hidden: bool) -> list[int]:
    """The seeds of the visible cases, plus three hidden ones in grade mode."""
    return [0, 1, 2, 3] + ([101, 102, 103] if hidden else [])


def close(got: Any, want: Any, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Whether two tensors, arrays or numbers agree (float64, NaN equal to NaN)."""
    try:
        g = torch.as_tensor(np.asarray(got.detach().cpu() if torch.is_tensor(got) else got, dtype=np.float64))
        w = torch.as_tensor(np.asarray(want.detach().cpu() if torch.is_tensor(want) else want, dtype=np.float64))
        torch.testing.assert_close(g, w, atol=atol, rtol=rtol, equal_nan=True)
    except (AssertionError, TypeError, ValueError, RuntimeError):
        return False
    return True


def expect(got: Any, want: Any, mistakes: dict[str, Any], hint: str, **tol: float) -> None:
    """Raise :class:`Mistake` unless ``got`` matches ``want``; name the known mistake it matches, if any.

    Args:
        got: the student's value.
        want: the reference value.
        mistakes: hint -> the value that mistake gives (a callable is called lazily).
        hint: the hint when no known mistake matches.
        **tol: ``atol`` and ``rtol`` for :func:`close`.
    """
    if close(got, want, **tol):
        return
    for text, value in mistakes.items():
        if close(got, value() if callable(value) else value, **tol):
            raise Mistake(text)
    raise Mistake(hint)


@contextlib.contextmanager
def grade_mode() -> Iterator[list[Result]]:
    """Turn hidden cases on; yield the list the checks and answers append their results to."""
    old = dict(GRADE)
    GRADE.update(on=True, log=[])
    try:
        yield GRADE["log"]
    finally:
        GRADE.update(old)
