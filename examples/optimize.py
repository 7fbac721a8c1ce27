"""Compile ``DocsQA`` offline into two optimized states: ``qa-v1.0.json`` and ``qa-v1.1.json``.

Usage::

    python examples/optimize.py OUT_DIR [--verbose]

Both versions are compiled with ``dspy.BootstrapFewShot`` against a scripted
``dspy.utils.DummyLM`` (no network, no real LM) and saved as JSON state with
``program.save(...)`` (never pickle):

* v1.0 -- default signature instructions, BootstrapFewShot(2 bootstrapped / 2 labeled)
  on ``TRAINSET``.
* v1.1 -- new instructions on ``generate_query`` and ``answer.predict`` (a simulated
  COPRO-style instruction optimizer), then BootstrapFewShot(3 / 3) on
  ``TRAINSET_V1_1`` (TRAINSET without example #1). Against v1.0, ``generate_query`` and
  ``answer.predict`` keep the demo from example #0, drop the one from example #1 and add
  demos for examples #2 and #3. ``check`` keeps its v1.0 instructions; its demos hold only
  scripted LM outputs (no question), so it keeps both v1.0 demos and adds one.

The output is deterministic: every compile gets a fresh DummyLM with the same script,
and BootstrapFewShot / LabeledFewShot only use ``random.Random(0)``, so two runs give
byte-identical JSON files.

stdout carries exactly the two saved paths (one per line); the verification summary
and a sample run of the reloaded v1.1 program go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dspy
from dspy.utils import DummyLM

# Resolved from this script's directory, which Python puts on sys.path when run as a script.
from qa_program import DocsQA

TRAINSET: list[dspy.Example] = [
    dspy.Example(question=q, answer=a).with_inputs("question")
    for q, a in [
        ("What is DSPy?", "A framework for programming language models with composable Python modules."),
        ("What becomes the instructions of a DSPy signature?", "Its docstring."),
        ("What does dspy.ChainOfThought add to a signature?", "A reasoning output field before the answer."),
        ("How does BootstrapFewShot choose demos?", "It keeps teacher traces that pass the metric."),
        ("Which optimizers tune DSPy instructions?", "COPRO, MIPROv2 and GEPA."),
        ("How do you persist an optimized DSPy program?", "Call program.save('program.json') to write JSON state."),
        ("Why prefer JSON over pickle for saved state?", "Loading a pickle can execute arbitrary code."),
        ("How do you roll back a deployed program?", "Load the state file from an earlier git tag."),
    ]
]

# v1.1 is trained on a curated slice: example #1 is dropped (its answer is too terse to be a good demo).
TRAINSET_V1_1: list[dspy.Example] = [ex for i, ex in enumerate(TRAINSET) if i != 1]

# Instructions proposed by the (simulated) instruction optimizer for v1.1, keyed by predictor name.
V1_1_INSTRUCTIONS: dict[str, str] = {
    "generate_query": (
        "Rewrite the question as 3-6 lowercase search keywords. Keep DSPy API names "
        "(e.g. BootstrapFewShot, ChainOfThought) verbatim and drop filler words."
    ),
    "answer.predict": (
        "Using only facts stated in the passages, answer the question in one sentence. "
        "Name the exact DSPy API or git concept involved, and lower the confidence when "
        "the passages only partially cover the question."
    ),
}

_SCRIPTED_QUERIES: tuple[str, ...] = (
    "dspy framework modules",
    "signature docstring instructions",
    "chainofthought reasoning field",
    "bootstrapfewshot traces metric demos",
    "optimizers instructions copro miprov2 gepa",
    "save json state load",
    "pickle arbitrary code json",
    "rollback deployment earlier tag",
)
_SCRIPTED_ANSWERS: tuple[str, ...] = (
    "DSPy programs language models with Python modules.",
    "The signature docstring.",
    "A reasoning field.",
    "Teacher traces that pass the metric.",
    "COPRO, MIPROv2 and GEPA.",
    "program.save writes JSON state.",
    "Pickle loading can run arbitrary code.",
    "Load the state from an earlier tag.",
    "It depends on the retrieved passages.",
)


def scripted_outputs(n: int = 200) -> list[dict[str, Any]]:
    """DummyLM script: every entry carries the output fields of *all* predictors.

    ``query`` (generate_query), ``reasoning``/``answer``/``confidence`` (answer.predict) and
    ``supported`` (check) are all present, so whichever predictor consumes entry ``i`` can
    parse it. Values depend on ``i`` so that demos bootstrapped from different calls differ.
    """
    return [
        {
            "query": _SCRIPTED_QUERIES[i % len(_SCRIPTED_QUERIES)],
            "reasoning": f"Passage {i % 3 + 1} states the relevant fact directly (scripted call {i}).",
            "answer": _SCRIPTED_ANSWERS[i % len(_SCRIPTED_ANSWERS)],
            "confidence": round(0.5 + (i % 10) * 0.05, 2),
            "supported": i % 4 != 3,
        }
        for i in range(n)
    ]


def non_empty_answer(example: dspy.Example, prediction: dspy.Prediction, trace: object = None) -> bool:
    """Bootstrapping metric: accept any trace that produced a non-empty answer."""
    return bool(str(getattr(prediction, "answer", "") or "").strip())


@contextlib.contextmanager
def _silenced(enabled: bool) -> Iterator[None]:
    """Swallow BootstrapFewShot's tqdm bar and summary print (errors still raise)."""
    if not enabled:
        yield
        return
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def bootstrap(student: DocsQA, trainset: list[dspy.Example], max_demos: int, *, quiet: bool) -> DocsQA:
    """Run BootstrapFewShot against a fresh scripted DummyLM; any LM/parse error aborts."""
    optimizer = dspy.BootstrapFewShot(
        metric=non_empty_answer,
        max_bootstrapped_demos=max_demos,
        max_labeled_demos=max_demos,
        max_errors=1,
    )
    with dspy.context(lm=DummyLM(scripted_outputs())), _silenced(quiet):
        return optimizer.compile(student, trainset=trainset)


def compile_v1_0(*, quiet: bool = True) -> DocsQA:
    return bootstrap(DocsQA(), TRAINSET, max_demos=2, quiet=quiet)


def compile_v1_1(*, quiet: bool = True) -> DocsQA:
    student = DocsQA()
    # Simulated instruction optimization (what COPRO/MIPROv2/GEPA do): replace the
    # signature of each named predictor. For ChainOfThought the predictor is the inner
    # ``answer.predict``; its signature already includes the prepended ``reasoning`` field.
    for name, predictor in student.named_predictors():
        if name in V1_1_INSTRUCTIONS:
            predictor.signature = predictor.signature.with_instructions(V1_1_INSTRUCTIONS[name])
    return bootstrap(student, TRAINSET_V1_1, max_demos=3, quiet=quiet)


def _describe(program: DocsQA) -> dict[str, tuple[str, list[str]]]:
    """predictor name -> (instructions, demo questions/answers)."""
    out: dict[str, tuple[str, list[str]]] = {}
    for name, predictor in program.named_predictors():
        keys = [str(demo.get("question", demo.get("answer", ""))) for demo in predictor.demos]
        out[name] = (predictor.signature.instructions, keys)
    return out


def verify(v1_0_path: Path, v1_1_path: Path) -> tuple[DocsQA, DocsQA]:
    """Load both states into fresh programs and check that they differ the intended way."""
    v1_0 = DocsQA()
    v1_0.load(str(v1_0_path))
    v1_1 = DocsQA()
    v1_1.load(str(v1_1_path))
    old, new = _describe(v1_0), _describe(v1_1)
    for name in ("generate_query", "answer.predict"):
        assert old[name][0] != new[name][0], f"{name}: instructions should differ"
        assert new[name][0] == V1_1_INSTRUCTIONS[name], f"{name}: v1.1 instructions not restored"
    assert old["check"][0] == new["check"][0], "check: instructions should be unchanged"
    for name in old:
        assert len(old[name][1]) == 2 and len(new[name][1]) == 3, f"{name}: unexpected demo counts"
        assert old[name][1] != new[name][1], f"{name}: demos should differ"
    return v1_0, v1_1


def _report(v1_0: DocsQA, v1_1: DocsQA) -> None:
    err = sys.stderr
    for label, program in (("v1.0", v1_0), ("v1.1", v1_1)):
        print(f"[{label}]", file=err)
        for name, (instructions, keys) in _describe(program).items():
            print(f"  {name}: {len(keys)} demos | {instructions}", file=err)
    # One scripted reply per LM call, in call order: generate_query, answer.predict, check.
    sample_lm = DummyLM(
        [
            {"query": "rollback deployment earlier tag state"},
            {
                "reasoning": "The deployment passage says rolling back means loading an earlier state file.",
                "answer": "Load the state file from an earlier tag.",
                "confidence": 0.9,
            },
            {"supported": True},
        ]
    )
    with dspy.context(lm=sample_lm):
        prediction = v1_1(question="How do I roll back to a previous program version?")
    print(
        f"[v1.1 sample run] answer={prediction.answer!r} confidence={prediction.confidence} "
        f"supported={prediction.supported}",
        file=err,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="directory that receives qa-v1.0.json and qa-v1.1.json")
    parser.add_argument("--verbose", action="store_true", help="show BootstrapFewShot progress output")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    v1_0_path = out_dir / "qa-v1.0.json"
    v1_1_path = out_dir / "qa-v1.1.json"

    compile_v1_0(quiet=not args.verbose).save(str(v1_0_path))
    compile_v1_1(quiet=not args.verbose).save(str(v1_1_path))
    print(v1_0_path)
    print(v1_1_path)

    v1_0, v1_1 = verify(v1_0_path, v1_1_path)
    _report(v1_0, v1_1)
    print(f"[done in {time.perf_counter() - started:.2f}s]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
