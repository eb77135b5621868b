"""WinCLIP's compositional prompt ensemble, as data: every sentence the text encoder is given.

A prompt is ``template.format(state.format(word))``: 7 normal and 4 anomalous *states* of the
object word, times a list of *templates* (Jeong et al., CVPR 2023, Sec. 4.1 "compositional
prompt ensemble"). The states are the same in all three references (anomalib
``prompting.py:26-41``, zqhang's reproduction ``reproduce_WinCLIP.py:109-124``, mala-lab
``main.py:22-26``). The templates are not (``docs/baselines.md#section-2``):

* ``"anomalib21"`` (default): anomalib ``prompting.py:43-65`` = zqhang ``:126-148``, 21 entries with
  ``a jpeg corrupted photo of the {}.`` twice. It is the list behind the WinCLIP numbers that
  AnomalyCLIP and TPS reprint, so the duplicate is kept (it weighs that sentence double in the mean).
* ``"paper22"``: mala-lab ``main.py:27-50``, 22 distinct templates (the same ones plus
  ``a cropped photo of a {}.`` and ``a jpeg corrupted photo of a {}.``), most likely the paper's.

>>> normal, anomalous = prompt_ensemble("metal_nut")
>>> len(normal), len(anomalous)
(147, 84)
>>> normal[0], anomalous[-1]
('a cropped photo of the metal_nut.', 'a photo of a metal_nut with damage for anomaly detection.')
>>> prompt_ensemble(class_word("metal_nut", "spaces"), "paper22")[1][0]
'a cropped photo of the damaged metal nut.'
"""

from __future__ import annotations

from tpslab.utils import TPSLabError

NORMAL_STATES: list[str] = [  # anomalib prompting.py:26-34
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
]

ANOMALOUS_STATES: list[str] = [  # anomalib prompting.py:36-41; no "broken" (that is AnomalyCLIP's list)
    "damaged {}",
    "{} with flaw",
    "{} with defect",
    "{} with damage",
]

TEMPLATES_ANOMALIB21: list[str] = [  # anomalib prompting.py:43-65, zqhang reproduce_WinCLIP.py:126-148
    "a cropped photo of the {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of the {}.",
    "a dark photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a jpeg corrupted photo of the {}.",  # sic: the duplicate of both references
    "a blurry photo of the {}.",
    "a blurry photo of a {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.",
    "a photo of a {} for anomaly detection.",
]

TEMPLATES_PAPER22: list[str] = [  # mala-lab main.py:27-50, in its order
    "a cropped photo of the {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of a {}.",
    "a dark photo of the {}.",
    "a jpeg corrupted photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.",
    "a blurry photo of a {}.",
    "a photo of the {}.",
    "a photo of a {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of a {} for visual inspection.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for anomaly detection.",
    "a photo of the {} for anomaly detection.",
]

TEMPLATES: dict[str, list[str]] = {"anomalib21": TEMPLATES_ANOMALIB21, "paper22": TEMPLATES_PAPER22}


CLASS_WORDS = ("raw", "spaces")  # how a class folder name becomes the object word


def class_word(class_name: str, style: str = "raw") -> str:
    """The object word put into the states.

    Args:
        class_name: the data set's class folder name (``"metal_nut"``).
        style: ``"raw"`` keeps the name verbatim (default; zqhang ``:282-284`` and anomalib
            ``lightning_model.py:163-181``); ``"spaces"`` replaces ``_`` by a space as mala-lab
            does (``main.py:91``).

    >>> class_word("pipe_fryum"), class_word("pipe_fryum", "spaces")
    ('pipe_fryum', 'pipe fryum')
    """
    if style not in CLASS_WORDS:
        raise TPSLabError(f"class_word must be one of {', '.join(CLASS_WORDS)}, got {style!r}")
    return class_name if style == "raw" else class_name.replace("_", " ")


def prompt_ensemble(word: str, templates: str = "anomalib21") -> tuple[list[str], list[str]]:
    """All normal and all anomalous sentences for one object word, state-major.

    Args:
        word: the object word (see :func:`class_word`).
        templates: ``"anomalib21"`` or ``"paper22"``.

    Returns:
        ``(normal, anomalous)``: 7 x T and 4 x T sentences (T = 21 or 22), ordered as
        anomalib's ``create_prompt_ensemble`` (``prompting.py:110-116``): for each state, every template.
    """
    if templates not in TEMPLATES:
        raise TPSLabError(f"templates must be one of {', '.join(TEMPLATES)}, got {templates!r}")
    chosen = TEMPLATES[templates]
    normal = [t.format(s.format(word)) for s in NORMAL_STATES for t in chosen]
    anomalous = [t.format(s.format(word)) for s in ANOMALOUS_STATES for t in chosen]
    return normal, anomalous
