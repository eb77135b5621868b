"""The course kit: self-checking exercises (:func:`check`), questions (:func:`answer`), builds and grading.

``check("e3.1", fn)`` and ``answer("q3.1", value)`` are what the notebooks call; ``tpslab course
build`` writes the student and teacher builds (:mod:`tpslab.course.build`) and ``tpslab course grade``
grades a folder of submissions (:mod:`tpslab.course.grade`).
"""

from tpslab.course.questions import answer
from tpslab.course.runner import check

__all__ = ["answer", "check"]
