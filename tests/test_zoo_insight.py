"""The prompt-change insight of docs/insight.md on every module kind of the zoo (the example program has its own tests
in test_rendered.py, test_tokens.py, test_textconv.py, test_examples_leakage.py and test_drift.py): plain `git diff`
through the textconv driver, tokens recorded at publish and diffed, per-example evaluation with a planted leak, and
a version saved under another DSPy minor warning at load. diff --rendered on every kind is in test_rendered.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dspy_registry.bundle import import_program
from dspy_registry.registry import Registry
from dspy_registry.runtime import drift
from dspy_registry.state import read_state_file

from .conftest import ROOT, git
from .test_zoo import optimized_state, program_name, spec_of
from .zoo.programs import KINDS

METRIC = f"{ROOT / 'examples' / 'metric.py'}:answer_match"


def _leaked_row(kind: str, prompts: dict[str, Any]) -> dict[str, Any]:
    """A dev example copied from one of the kind's demos that holds every program input, in another case and
    spacing (the leak the check must still see)."""
    names = list(KINDS[kind].inputs)
    for predictor in prompts.values():
        for demo in predictor["demos"]:
            if all(n in demo for n in names):
                return {n: f"  {demo[n].upper()} " if isinstance(demo[n], str) else demo[n] for n in names}
    raise AssertionError(f"{kind}: no demo holds every program input {names}")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_insight_on_every_module_kind(
    kind: str, registry: Registry, tmp_path: Path, fake_lm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_lm.overrides.update(KINDS[kind].overrides)
    name = program_name(kind)
    _, path = optimized_state(kind, tmp_path)
    source = import_program(spec_of(kind))
    state = read_state_file(path)
    registry.publish(source, state, name=name, version="v1.0", lm={"model": "openai/gpt-4o-mini"})
    changed = json.loads(json.dumps(state))
    # a bare dspy.Predict saves its own state at the top level; a module saves one entry per predictor
    entries = [v for v in changed.values() if isinstance(v, dict) and "signature" in v] or [changed]
    entries[0]["signature"]["instructions"] = "Answer in one short sentence, citing the tool you used."
    registry.publish(source, changed, name=name, version="v1.1", lm={"model": "openai/gpt-4o-mini"})

    # 3. plain git diff shows the per-predictor view, the changed instruction as a line of its own
    shown = git(Path(registry.location), "diff", f"{name}/v1.0", f"{name}/v1.1", "--", f"{name}/prompts.json")
    assert "\n predictor " in shown and "+    Answer in one short sentence, citing the tool you used." in shown
    assert '"instructions":' not in shown  # not the raw JSON

    # 2. tokens measured at publish, per predictor and per call, and their delta in diff
    tokens = registry.show("v1.1", name).manifest.tokens
    assert tokens is not None and tokens.total > 0 and tokens.tokenizer == "tiktoken o200k_base"
    delta = registry.diff("v1.0", "v1.1", name).to_json()["tokens"]
    assert delta["a"]["total"] > 0 and delta["total_delta"] == delta["b"]["total"] - delta["a"]["total"]

    # 4 + 5. per-example records on one dev set, and a planted leak caught
    prompts = json.loads(git(Path(registry.location), "show", f"{name}/v1.1:{name}/prompts.json"))
    rows = [dict(KINDS[kind].inputs, answer="x"), dict(_leaked_row(kind, prompts), answer="x")]
    devset = tmp_path / "dev.jsonl"
    devset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = [registry.evaluate(v, devset, METRIC, name=name, threads=1) for v in ("v1.0", "v1.1")]
    assert all(r.examples is not None and len(r.examples) == 2 for r in records)
    assert [r.leakage for r in records] == [1, 1]
    comparison = registry.compare_examples("v1.0", "v1.1", name).to_json()
    assert comparison["n"] == 2 and comparison["leakage"] == {"a": 1, "b": 1}

    # 6. a state saved under another DSPy minor warns once at load
    forged = json.loads(json.dumps(state))
    forged["metadata"]["dependency_versions"]["dspy"] = "3.3.0"
    registry.publish(source, forged, name=name, version="v1.2")
    monkeypatch.setattr(drift, "_reported", set())
    with pytest.warns(drift.DriftWarning, match=r"saved with dspy 3\.3\.0"):
        registry.load("v1.2", name)
