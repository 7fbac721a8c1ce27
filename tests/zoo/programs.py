"""A zoo of real DSPy module kinds, each importable as a program spec `tests/zoo/programs.py:<Attr>`.

`KINDS` names each kind's factory, a sample input, and `optimize`, which sets demos by hand as an optimizer would
(BootstrapFewShot's shape: input and output fields, bootstrapped ones marked `augmented`), so compiling is offline
and instant. Demo values that are dicts and pydantic models have keys in non-alphabetical order on purpose: their
order is part of the prompt.

dspy.ProgramOfThought is not in the zoo: it runs the generated code in Deno (dspy.PythonInterpreter), and Deno is
not installed on this machine, so the program cannot answer a request here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import dspy
from pydantic import BaseModel


# -- tools and a retriever (plain Python, not predictors) -------------------------------------------------------------
def search_docs(query: str = "dspyreg") -> str:
    """Search the documentation for `query`."""
    return f"Docs about {query}: publish, promote, rollback."


def count_words(text: str = "") -> int:
    """Count the words of `text`."""
    return len(text.split())


class KeywordRetriever:
    """A retriever-like attribute: called by the program, holds no predictor and no state."""

    def __init__(self, passages: list[str], k: int = 2) -> None:
        self.passages, self.k = passages, k

    def __call__(self, query: str) -> list[str]:
        words = set(query.lower().split())
        ranked = sorted(self.passages, key=lambda p: -len(words & set(p.lower().split())))
        return ranked[: self.k]


PASSAGES = ["dspyreg publish writes a version", "dspyreg rollback moves prod back", "tags are immutable"]


# -- typed fields -----------------------------------------------------------------------------------------------------
class Verdict(BaseModel):
    score: float  # fields out of alphabetical order: a sorted dump would reorder them in the prompt
    label: Literal["yes", "no"]


class Assess(dspy.Signature):
    """Assess the claim using the tags."""

    claim: str = dspy.InputField(desc="The claim to assess.")
    tags: list[str] = dspy.InputField()
    limit: Optional[int] = dspy.InputField()  # noqa: UP045 - typing.Optional, as many users still write it
    stance: Literal["true", "false", "unsure"] = dspy.OutputField()
    count: int = dspy.OutputField()
    confidence: float = dspy.OutputField()
    supported: bool = dspy.OutputField()
    keywords: list[str] = dspy.OutputField()
    details: dict[str, Any] = dspy.OutputField()
    verdict: Verdict = dspy.OutputField()
    note: Optional[str] = dspy.OutputField()  # noqa: UP045 - typing.Optional, as many users still write it


# -- the module kinds -------------------------------------------------------------------------------------------------
def make_predict() -> dspy.Module:
    return dspy.Predict("question -> answer")


def make_cot() -> dspy.Module:
    return dspy.ChainOfThought("question -> answer")


def make_react() -> dspy.Module:
    return dspy.ReAct("question -> answer", tools=[search_docs, count_words], max_iters=3)


class ReActAgent(dspy.Module):
    """A wrapper that returns ReAct's prediction: its `trajectory` output is a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.agent = dspy.ReAct("question -> answer", tools=[search_docs, count_words], max_iters=3)

    def forward(self, question: str) -> dspy.Prediction:
        return self.agent(question=question)


class Compare(dspy.Module):
    """Three attempts, then dspy.MultiChainComparison picks the answer."""

    def __init__(self) -> None:
        super().__init__()
        self.attempt = dspy.ChainOfThought("question -> answer")
        self.compare = dspy.MultiChainComparison("question -> answer", M=3)

    def forward(self, question: str) -> dspy.Prediction:
        completions = [self.attempt(question=question, config={"rollout_id": i}) for i in range(3)]
        return self.compare(completions, question=question)


def always_good(args: dict[str, Any], prediction: dspy.Prediction) -> float:
    return 1.0


def make_best_of_n() -> dspy.Module:
    return dspy.BestOfN(dspy.ChainOfThought("question -> answer"), N=2, reward_fn=always_good, threshold=1.0)


class MultiHop(dspy.Module):
    """Hops in a list (`hops[0]`, `hops[1]`) and a retriever that is no predictor."""

    def __init__(self) -> None:
        super().__init__()
        self.retrieve = KeywordRetriever(PASSAGES)
        self.hops = [dspy.ChainOfThought("context: list[str], question -> query") for _ in range(2)]
        self.answer = dspy.ChainOfThought("context: list[str], question -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        context: list[str] = []
        for hop in self.hops:
            query = hop(context=context, question=question).query
            context += [p for p in self.retrieve(query) if p not in context]
        return self.answer(context=context, question=question)


def make_typed() -> dspy.Module:
    return dspy.Predict(Assess)


# -- demos as an optimizer leaves them --------------------------------------------------------------------------------
def _qa_demos(*outputs: str) -> list[dspy.Example]:
    labeled = dspy.Example(question="What does publish do?", answer="It writes a version.")
    boot = dspy.Example(augmented=True, question="How do I undo a release?", answer="dspyreg rollback")
    for name in outputs:
        boot[name] = f"Think about {name} first."
    return [boot, labeled] if outputs else [labeled]


def optimize(kind: str, program: dspy.Module) -> dspy.Module:
    """`program` with the demos an optimizer would have set for `kind`."""
    for _, predictor in program.named_predictors():
        sig = predictor.signature
        if kind == "typed":
            predictor.demos = [
                dspy.Example(
                    augmented=True,
                    claim="Tags never move.",
                    tags=["git", "tags"],
                    limit=2,
                    stance="true",
                    count=2,
                    confidence=0.9,
                    supported=True,
                    keywords=["immutable"],
                    details={"zeta": 1, "alpha": {"y": 2, "b": [1, 2]}},
                    verdict=Verdict(score=0.75, label="yes"),
                    note=None,
                )
            ]
        elif set(sig.input_fields) == {"question"} and "answer" in sig.output_fields:
            predictor.demos = _qa_demos(*(f for f in sig.output_fields if f != "answer"))
        else:  # an inner predictor (a hop, ReAct's step): one bootstrapped trace with every field
            demo = {f: {"zeta": f, "alpha": 1} if f == "trajectory" else f"demo {f}" for f in sig.fields}
            if "context" in demo:
                demo["context"] = ["p1", "p2"]
            if "next_tool_name" in demo:
                demo["next_tool_name"] = "finish"
                demo["next_tool_args"] = {"zeta": "z", "alpha": "a"}
            predictor.demos = [dspy.Example(augmented=True, **demo)]
    return program


@dataclass(frozen=True)
class Kind:
    attr: str
    inputs: dict[str, Any]
    outputs: tuple[str, ...]  # output fields the program returns (at least these)
    overrides: dict[str, str] = field(default_factory=dict)  # fake LM answers for this kind


QUESTION = {"question": "How do I roll back?"}
KINDS: dict[str, Kind] = {
    "predict": Kind("make_predict", QUESTION, ("answer",)),
    "cot": Kind("make_cot", QUESTION, ("reasoning", "answer")),
    "react": Kind("make_react", QUESTION, ("trajectory", "reasoning", "answer")),
    "react_wrapper": Kind("ReActAgent", QUESTION, ("trajectory", "reasoning", "answer")),
    "mcc": Kind("Compare", QUESTION, ("rationale", "answer")),
    "best_of_n": Kind("make_best_of_n", QUESTION, ("reasoning", "answer")),
    "multihop": Kind("MultiHop", QUESTION, ("reasoning", "answer")),
    "typed": Kind(
        "make_typed",
        {"claim": "Tags never move.", "tags": ["git"], "limit": 3},
        ("stance", "count", "confidence", "supported", "keywords", "details", "verdict", "note"),
    ),
}
FACTORIES: dict[str, Callable[[], dspy.Module]] = {name: globals()[kind.attr] for name, kind in KINDS.items()}
