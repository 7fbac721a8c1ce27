"""Evaluation metric for the DocsQA example (stdlib only, no LM)."""

from __future__ import annotations

from typing import Any


def answer_match(example: Any, prediction: Any, trace: Any = None) -> bool:
    """Case-insensitive exact match of ``prediction.answer`` against ``example.answer``.

    Surrounding whitespace is ignored; a missing or ``None`` answer never matches.
    ``trace`` is accepted for compatibility with DSPy optimizers and ignored.
    """
    expected = getattr(example, "answer", None)
    predicted = getattr(prediction, "answer", None)
    if expected is None or predicted is None:
        return False
    return str(predicted).strip().casefold() == str(expected).strip().casefold()
