"""Load what prod points to and call it, with DSPy's DummyLM standing in for a real model."""

from __future__ import annotations

import dspy
from dspy.utils import DummyLM

import dspy_registry

program = dspy_registry.load("qa", "prod")  # registry from DSPYREG_REGISTRY, else ./registry
for name, predictor in program.named_predictors():
    print(f"{name}: {len(predictor.demos)} demos; instructions: {predictor.signature.instructions[:70]}...")
reply = {
    "query": "dspy rollback",
    "reasoning": "Passage 1 says so.",
    "answer": "Move prod back with dspyreg rollback.",
    "confidence": "0.9",
    "supported": "True",
}
with dspy.context(lm=DummyLM([reply] * 3)):
    prediction = program(question="How do I roll back a bad release?")
print(f"answer: {prediction.answer} (confidence {prediction.confidence}, supported {prediction.supported})")
