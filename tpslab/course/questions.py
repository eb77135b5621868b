"""Questions without a code answer: ``answer("q3.1", value)`` checks a value against a salted hash.

Multiple-choice answers are letters (``"a"`` to ``"d"``, any case); numeric answers are compared
to two decimals. Only the salts and the hashes are stored here, so neither the student build nor
this package contains the answers (the teacher's notebooks and ``course/INSTRUCTOR.md`` do). A
student who tries every letter will find the answer: the hashes keep answers out of sight, they
are not a lock.
"""

from __future__ import annotations

import hashlib
from typing import Any

from tpslab.course.checks import GRADE, Result
from tpslab.utils import TPSLabError

HASHES = {  # id -> (salt, first 20 hex digits of sha256(salt + "|" + normalised answer))
    "q0.1": ("6a948047", "5b5e3661090abd9cf89b"),
    "q0.2": ("47be0b04", "de189b3e3a7715932fcf"),
    "q1.1": ("c888a665", "995aa468d1afeaee2dc9"),
    "q1.2": ("fbf81676", "31a8dadefccadf008518"),
    "q2.1": ("45153f17", "b86781a59aecb3a0f630"),
    "q2.2": ("8ac0de18", "058057815e2a7fb5f6e1"),
    "q3.1": ("4afbdc6a", "d528715434fb31a8923f"),
    "q3.2": ("d212dd52", "67d0621a6a213036e670"),
    "q4.1": ("6c8e8769", "ab30e49b77daf1fb72fd"),
    "q4.2": ("6dcedfda", "83594441020c7cacb9f9"),
    "q5.1": ("d8d66872", "006161ad5ef9d3aac9df"),
    "q5.2": ("ca86e149", "2959ffabd92b40626341"),
    "q6.1": ("a8228d4f", "a811e73f91344b19ca74"),
    "q6.2": ("28baff29", "bb5eaa966349d17ac0b2"),
    "q7.1": ("56cbd4cf", "180b4794c0b7abe24c9c"),
    "q7.2": ("fd2f461c", "91c7d2bc87ec73ae3d12"),
}


def normalise(value: Any) -> str:
    """A letter in lower case, or a number with two decimals."""
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            return text if text.isalpha() else f"{float(text):.2f}"
        except ValueError:
            return text
    return f"{float(value):.2f}"


def digest(salt: str, value: Any) -> str:
    """The stored form of an answer."""
    return hashlib.sha256(f"{salt}|{normalise(value)}".encode()).hexdigest()[:20]


def grade_answer(id_: str, value: Any) -> Result:
    """Check an answer without printing: "passed", "not attempted" (None) or "failed"."""
    key = id_.lower()
    if key not in HASHES:
        raise TPSLabError(f"no question {id_!r}; there are {', '.join(HASHES)}")
    if value is None or value is Ellipsis:
        return Result(key, "not attempted")
    salt, stored = HASHES[key]
    try:
        ok = digest(salt, value) == stored
    except (TypeError, ValueError):
        ok = False
    return Result(key, "passed", 1) if ok else Result(key, "failed", hint="not this one: read the section again")


def answer(id_: str, value: Any) -> Result:
    """Check the answer to question ``id_`` and print one line (``q3.1: passed (1 cases)`` etc.)."""
    result = grade_answer(id_, value)
    if GRADE["on"]:
        GRADE["log"].append(result)
    print(result.line())
    return result
