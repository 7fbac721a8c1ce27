"""Example DSPy program: question answering over a tiny in-memory DSPy/git corpus.

``DocsQA`` chains three predictors:

* ``generate_query`` -- ``dspy.Predict(GenerateSearchQuery)``
* ``answer.predict`` -- the inner ``Predict`` of ``dspy.ChainOfThought(AnswerWithPassages)``
* ``check``          -- ``dspy.Predict(CheckSupport)``

Retrieval is a plain, deterministic keyword-overlap scorer over ``CORPUS`` (no LM,
no vector store), so the program is fully reproducible offline with ``dspy.utils.DummyLM``.

This file imports only ``dspy`` and the standard library, uses no relative imports and
never calls an LM at import time, so it can be loaded standalone by file path.
"""

from __future__ import annotations

import re

import dspy

__all__ = [
    "CORPUS",
    "AnswerWithPassages",
    "CheckSupport",
    "DocsQA",
    "GenerateSearchQuery",
    "build",
    "search",
]

CORPUS: list[str] = [
    (
        "DSPy is a framework for programming language models with composable Python modules instead of "
        "hand-written prompts."
    ),
    (
        "A DSPy signature declares the input and output fields of a task; its docstring becomes the "
        "instructions given to the LM."
    ),
    (
        "dspy.Predict is the basic module: it formats a signature, its instructions and its few-shot demos "
        "into a prompt and parses the reply."
    ),
    (
        "dspy.ChainOfThought adds a reasoning output field before the answer and wraps an inner Predict "
        "module named predict."
    ),
    (
        "Optimizers such as BootstrapFewShot, COPRO, MIPROv2 and GEPA tune the demos and instructions of "
        "every predictor using a metric and a trainset."
    ),
    (
        "BootstrapFewShot runs a teacher program on training examples and keeps the traces that pass the "
        "metric as few-shot demos."
    ),
    (
        "program.save('program.json') writes the optimized state (signatures, instructions and demos) as "
        "JSON; program.load restores it into a fresh instance."
    ),
    "Saving state as JSON is safer than pickle because loading a pickle file can execute arbitrary code.",
    (
        "Git stores every commit as an immutable snapshot, and a tag gives a human-readable name such as v1.0"
        " to one commit."
    ),
    (
        "A git diff between two tags shows exactly which instructions and demos changed between two optimized"
        " program versions."
    ),
    (
        "For deployment, pin the dspy version, load the saved JSON state at startup and configure the "
        "production LM with dspy.configure."
    ),
    (
        "Rolling back a deployment means loading the state file from an earlier tag, which is cheap because "
        "the program code is unchanged."
    ),
]

# fmt: off
_STOPWORDS: frozenset[str] = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how", "i",
    "in", "is", "it", "its", "of", "on", "or", "such", "that", "the", "their", "this", "to", "what",
    "when", "which", "who", "why", "with",
})
# fmt: on
_TOKEN_RE = re.compile(r"[a-z0-9]+")


def _tokens(text: str) -> set[str]:
    """Lower-cased alphanumeric tokens of ``text`` without stopwords."""
    return {tok for tok in _TOKEN_RE.findall(text.lower()) if tok not in _STOPWORDS}


def search(query: str, k: int = 3) -> list[str]:
    """Return the ``k`` CORPUS passages with the largest keyword overlap with ``query``.

    Deterministic: ties are broken by corpus order (the sort is stable).
    """
    query_tokens = _tokens(query)
    scored = sorted(
        enumerate(CORPUS),
        key=lambda item: -len(query_tokens & _tokens(item[1])),
    )
    return [passage for _, passage in scored[: max(0, k)]]


class GenerateSearchQuery(dspy.Signature):
    """Write a short keyword search query that will retrieve documentation passages answering the question."""

    question: str = dspy.InputField(desc="A user question about DSPy, git or deploying DSPy programs.")
    query: str = dspy.OutputField(desc="A few search keywords, no full sentence.")


class AnswerWithPassages(dspy.Signature):
    """Answer the question using only the retrieved passages. Be concise."""

    question: str = dspy.InputField(desc="The user question.")
    passages: list[str] = dspy.InputField(desc="Retrieved documentation passages, most relevant first.")
    answer: str = dspy.OutputField(desc="A short, factual answer (one sentence at most).")
    confidence: float = dspy.OutputField(desc="Confidence that the answer is correct, between 0.0 and 1.0.")


class CheckSupport(dspy.Signature):
    """Decide whether the answer is fully supported by the passages."""

    answer: str = dspy.InputField(desc="The proposed answer.")
    passages: list[str] = dspy.InputField(desc="The passages the answer should be grounded in.")
    supported: bool = dspy.OutputField(desc="True if every claim in the answer is backed by the passages.")


class DocsQA(dspy.Module):
    """Retrieve-then-answer program with a self-check step.

    Named predictors: ``generate_query``, ``answer.predict``, ``check``.
    """

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.generate_query = dspy.Predict(GenerateSearchQuery)
        self.answer = dspy.ChainOfThought(AnswerWithPassages)
        self.check = dspy.Predict(CheckSupport)
        self.k = k

    def forward(self, question: str) -> dspy.Prediction:
        query = self.generate_query(question=question).query
        passages = search(query or question, self.k)
        answered = self.answer(question=question, passages=passages)
        checked = self.check(answer=answered.answer, passages=passages)
        return dspy.Prediction(
            answer=answered.answer,
            confidence=answered.confidence,
            supported=checked.supported,
            passages=passages,
        )


def build() -> DocsQA:
    """Zero-argument factory used by tooling that needs a fresh, unoptimized program."""
    return DocsQA()
