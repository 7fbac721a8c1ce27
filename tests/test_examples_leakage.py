"""Per-example comparison (`diff --examples`, the min_delta_ci_low gate) and the dev-set leakage check (eval, show,
diff, the max_leakage gate), against the fake LM on 127.0.0.1; records forged by hand are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.example_compare import paired_bootstrap
from dspy_registry.leakage import example_id
from dspy_registry.registry import Registry

from .conftest import ROOT, git, ref_snapshot

runner = CliRunner()
METRIC = f"{ROOT / 'examples' / 'metric.py'}:answer_match"
WHO = ("-c", "user.name=R", "-c", "user.email=r@x")


def cli(registry: Registry, *args: str) -> Any:
    return runner.invoke(app, [*args, "--registry", registry.location])


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def evaluate(registry: Registry, fake_lm: Any, version: str, devset: Path, answer: str) -> dict[str, Any]:
    """Evaluate `version` with the fake LM answering `answer` to every question."""
    fake_lm.overrides["answer"] = answer
    result = cli(registry, "eval", version, "--devset", str(devset), "--metric", METRIC, "--threads", "2", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def set_gates(registry: Registry, tmp_path: Path, toml: str) -> None:
    clone = tmp_path / "gates-clone"
    git(tmp_path, "clone", "-q", registry.location, str(clone))
    (clone / "registry.toml").write_text((clone / "registry.toml").read_text() + toml)
    git(clone, *WHO, "commit", "-qam", "gates")
    git(clone, "push", "-q", "origin", "main")


@pytest.fixture
def devset(tmp_path: Path) -> Path:
    """Four questions: answering "JSON" passes q0, q1, q3; answering "Pickle" passes q2 only."""
    answers = ["JSON", "json", "Pickle", " JSON "]
    return write_jsonl(tmp_path / "dev.jsonl", [{"question": f"q{i}?", "answer": a} for i, a in enumerate(answers)])


# -- per-example comparison -------------------------------------------------------------------------------------------
def test_diff_examples_lists_exactly_the_flips_with_a_deterministic_interval(
    published: Registry, fake_lm: Any, devset: Path
) -> None:
    old = evaluate(published, fake_lm, "v1.0", devset, "JSON")
    new = evaluate(published, fake_lm, "v1.1", devset, "Pickle")
    assert [e["score"] for e in old["examples"]] == [1.0, 1.0, 0.0, 1.0]
    assert [e["id"] for e in old["examples"]] == [example_id({"question": f"q{i}?"}) for i in range(4)]
    assert [e["inputs"] for e in new["examples"]] == [{"question": f"q{i}?"} for i in range(4)]  # no labels kept

    result = cli(published, "diff", "v1.0", "v1.1", "--examples", "--format", "json")
    assert result.exit_code == 0, result.output
    compared = json.loads(result.stdout)
    assert compared["flipped"] == [
        {
            "id": example_id({"question": f"q{i}?"}),
            "change": change,
            "before": b,
            "after": a,
            "inputs": {"question": f"q{i}?"},
        }
        for i, change, b, a in [
            (0, "pass -> fail", 1.0, 0.0),
            (1, "pass -> fail", 1.0, 0.0),
            (2, "fail -> pass", 0.0, 1.0),
            (3, "pass -> fail", 1.0, 0.0),
        ]
    ]
    assert (compared["score_a"], compared["score_b"], compared["delta"], compared["n"]) == (0.75, 0.25, -0.5, 4)
    low, high = compared["ci95"]
    assert low <= compared["delta"] <= high and low < high
    assert (low, high) == paired_bootstrap([-1.0, -1.0, 1.0, -1.0])
    again = cli(published, "diff", "v1.0", "v1.1", "--examples", "--json")
    assert json.loads(again.stdout) == compared  # seeded: the same records give the same interval every time
    assert compared["devset_sha256"] == new["devset_sha256"] and compared["leakage"] == {"a": 0, "b": 0}

    text = cli(published, "diff", "v1.0", "v1.1", "--examples").stdout
    assert f"delta -0.500, 95% interval [{low:+.3f}, {high:+.3f}]" in text
    assert "4 of 4 examples changed" in text and "fail -> pass  " in text and '{"question": "q2?"}' in text
    markdown = cli(published, "diff", "v1.0", "v1.1", "--examples", "--format", "markdown").stdout
    assert f'| fail -> pass | `{example_id({"question": "q2?"})}` | 0 | 1 | {{"question": "q2?"}} |' in markdown


def test_paired_bootstrap_is_seeded_and_holds_the_mean() -> None:
    differences = [1.0, 0.0, 0.0, 1.0, -1.0, 0.5, 0.0, 1.0, 0.0, 0.0]
    low, high = paired_bootstrap(differences)
    assert (low, high) == paired_bootstrap(differences)
    assert low < sum(differences) / len(differences) < high
    assert paired_bootstrap([1.0] * 7) == (1.0, 1.0)  # no variation, no width
    assert (low, high) == (-0.15, 0.6)  # pinned: Python's seeded Mersenne Twister is the same everywhere


def test_diff_examples_imports_no_dspy(published: Registry, fake_lm: Any, devset: Path) -> None:
    evaluate(published, fake_lm, "v1.0", devset, "JSON")
    evaluate(published, fake_lm, "v1.1", devset, "Pickle")
    probe = (
        "import json, sys\nfrom dspy_registry.cli import app\ntry:\n    app(sys.argv[1:], standalone_mode=False)\n"
        "except SystemExit:\n    pass\n"
        "print('HEAVY=' + json.dumps([m for m in ('dspy', 'litellm') if m in sys.modules]))\n"
    )
    command = ["diff", "v1.0", "v1.1", "--examples", "--registry", published.location]
    proc = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "4 of 4 examples changed" in proc.stdout and proc.stdout.rsplit("HEAVY=", 1)[1].strip() == "[]"


def test_not_comparable_evaluations_exit_1_in_one_line(
    published: Registry, fake_lm: Any, devset: Path, tmp_path: Path, states: dict[str, Path]
) -> None:
    evaluate(published, fake_lm, "v1.1", devset, "JSON")
    other = write_jsonl(tmp_path / "other.jsonl", [{"question": "another?", "answer": "JSON"}])
    cases = [
        (["v1.0", "v1.1"], "qa/v1.0 has no evaluation"),
        (["v1.1", "v1.0"], "qa/v1.0 has no evaluation"),
        ([str(states["v1.0"]), "v1.1"], "a state file has none"),
    ]
    for sides, match in cases:
        before = ref_snapshot(Path(published.location))
        result = cli(published, "diff", *sides, "--examples")
        assert result.exit_code == 1 and match in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
        assert ref_snapshot(Path(published.location)) == before
    evaluate(published, fake_lm, "v1.0", other, "JSON")
    before = ref_snapshot(Path(published.location))
    for output in ("text", "json", "markdown"):
        result = cli(published, "diff", "v1.0", "v1.1", "--examples", "--format", output)
        assert result.exit_code == 1 and "were evaluated on different dev sets (other.jsonl" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert ref_snapshot(Path(published.location)) == before


def test_min_delta_ci_low_refuses_then_accepts(published: Registry, fake_lm: Any, tmp_path: Path) -> None:
    set_gates(published, tmp_path, "\n[gates.prod]\nmin_delta_ci_low = 0\n")
    all_json = write_jsonl(tmp_path / "all.jsonl", [{"question": f"q{i}?", "answer": "JSON"} for i in range(6)])
    assert cli(published, "promote", "v1.0", "--to", "prod").exit_code == 0  # nothing in prod to compare with
    before = ref_snapshot(Path(published.location))
    result = cli(published, "promote", "v1.1", "--to", "prod")
    assert result.exit_code == 1 and "min_delta_ci_low 0 cannot be checked" in result.stderr
    assert "qa/v1.0 has no evaluation" in result.stderr and ref_snapshot(Path(published.location)) == before

    evaluate(published, fake_lm, "v1.0", all_json, "JSON")
    evaluate(published, fake_lm, "v1.1", all_json, "Pickle")  # worse on every example
    before = ref_snapshot(Path(published.location))
    result = cli(published, "promote", "v1.1", "--to", "prod")
    assert result.exit_code == 1, result.output
    assert "changes the score on qa/v1.0 by -1.000, 95% interval [-1.000, -1.000]" in result.stderr
    assert "not above min_delta_ci_low 0" in result.stderr and "--force --reason" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and ref_snapshot(Path(published.location)) == before

    evaluate(published, fake_lm, "v1.1", all_json, "JSON")  # as good: the interval [0, 0] is not above 0
    assert "by +0.000" in cli(published, "promote", "v1.1", "--to", "prod").stderr

    evaluate(published, fake_lm, "v1.0", all_json, "Pickle")  # now v1.1 is better on every example
    accepted = cli(published, "promote", "v1.1", "--to", "prod")
    assert accepted.exit_code == 0, accepted.output
    with Registry.open(published.location) as reg:
        assert reg.resolve("prod").version == "v1.1"


def test_gate_values_are_checked_by_type(published: Registry, tmp_path: Path) -> None:
    set_gates(published, tmp_path, '\n[gates.prod]\nmax_leakage = "none"\n')
    result = cli(published, "list")
    assert result.exit_code == 1 and "[gates.prod] max_leakage must be a whole number" in result.stderr
    clone = tmp_path / "gates-clone"
    text = (clone / "registry.toml").read_text().replace('max_leakage = "none"', "min_delta_ci_low = true")
    (clone / "registry.toml").write_text(text)
    git(clone, *WHO, "commit", "-qam", "gates")
    git(clone, "push", "-q", "origin", "main")
    result = cli(published, "list")
    assert result.exit_code == 1 and "[gates.prod] min_delta_ci_low must be a score difference" in result.stderr


# -- leakage -----------------------------------------------------------------------------------------------------------
def test_a_planted_leak_is_caught_shown_and_gated(published: Registry, fake_lm: Any, tmp_path: Path) -> None:
    with Registry.open(published.location) as reg:
        demo_questions = [d["question"] for d in reg.show("v1.1").predictors["generate_query"]["demos"]]
    assert "What is DSPy?" in demo_questions
    planted = {"question": "  what IS\tdspy? ", "answer": "JSON"}  # a demo's input, with other case and spacing
    devset = write_jsonl(
        tmp_path / "leaky.jsonl", [{"question": "Is JSON safe?", "answer": "JSON"}, planted, {"question": "dspy?"}]
    )
    leaked = example_id({"question": planted["question"]})

    fake_lm.overrides["answer"] = "JSON"
    result = cli(published, "eval", "v1.1", "--devset", str(devset), "--metric", METRIC, "--threads", "1")
    assert result.exit_code == 0, result.output
    assert f"warning: 1 of 3 dev examples appear among v1.1's demos (leakage): {leaked}" in result.stdout
    record = evaluate(published, fake_lm, "v1.1", devset, "JSON")
    assert (record["leakage"], record["leaked_ids"]) == (1, [leaked])

    shown = json.loads(cli(published, "show", "v1.1", "--json").stdout)
    assert [(e["leakage"], e["leaked_ids"]) for e in shown["evaluations"]] == [(1, [leaked])] * 2
    show_text = cli(published, "show", "v1.1").stdout
    assert "leaked" in show_text and "leaky.jsonl" in show_text
    diff = json.loads(cli(published, "diff", "v1.0", "v1.1", "--format", "json").stdout)
    assert diff["metadata"]["eval.leakage"] == {"before": None, "after": 1}
    evaluate(published, fake_lm, "v1.0", devset, "JSON")
    compared = json.loads(cli(published, "diff", "v1.0", "v1.1", "--examples", "--json").stdout)
    assert compared["leakage"]["b"] == 1 and compared["flipped"] == []

    set_gates(published, tmp_path, "\n[gates.staging]\nmax_leakage = 0\n")
    before = ref_snapshot(Path(published.location))
    refused = cli(published, "promote", "v1.1")
    assert refused.exit_code == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "qa v1.1's latest evaluation found 1 dev examples among its demos, above max_leakage 0" in refused.stderr
    assert "(override with --force --reason)" in refused.stderr
    assert ref_snapshot(Path(published.location)) == before
    forced = cli(published, "promote", "v1.1", "--force", "--reason", "leak known, accepted")
    assert forced.exit_code == 0, forced.output
    assert "max_leakage 0" in json.loads(cli(published, "log", "--json").stdout)[-1]["override"]


def test_a_clean_devset_leaks_nothing_and_an_unevaluated_version_is_not_let_through(
    published: Registry, fake_lm: Any, devset: Path, tmp_path: Path
) -> None:
    assert evaluate(published, fake_lm, "v1.1", devset, "JSON")["leakage"] == 0
    set_gates(published, tmp_path, "\n[gates.staging]\nmax_leakage = 0\n")
    result = cli(published, "promote", "v1.0")
    assert result.exit_code == 1 and "qa v1.0 has no leakage check (max_leakage 0)" in result.stderr
    assert cli(published, "promote", "v1.1").exit_code == 0


# -- records forged by hand --------------------------------------------------------------------------------------------
GOOD = {"question": "q0?"}


def good_record(**changes: Any) -> dict[str, Any]:
    record = {
        "time": "2026-01-01T00:00:00Z",
        "metric": "m:f",
        "score": 1.0,
        "n": 1,
        "devset": "dev.jsonl",
        "devset_sha256": "0" * 64,
        "leakage": 0,
        "leaked_ids": [],
        "examples": [{"id": example_id(GOOD), "score": 1.0, "inputs": GOOD}],
    }
    return {**record, **changes}


@pytest.mark.parametrize(
    "changes,bad",
    [
        ({"examples": {"id": "x"}}, "examples"),
        ({"examples": []}, "examples"),  # n says 1
        ({"examples": [{"id": example_id(GOOD), "score": True, "inputs": GOOD}]}, "examples"),
        ({"examples": [{"id": example_id(GOOD), "score": 1.5, "inputs": GOOD}]}, "examples"),
        ({"examples": [{"id": "0" * 12, "score": 1.0, "inputs": GOOD}]}, "examples"),  # not the hash of its inputs
        ({"examples": [{"id": example_id(GOOD), "score": 1.0, "inputs": ["q0?"]}]}, "examples"),
        ({"examples": ["q0?"]}, "examples"),
        ({"leakage": -1}, "leakage"),
        ({"leakage": 2}, "leakage"),  # more leaks than examples
        ({"leakage": "1"}, "leakage"),
        ({"leakage": 1, "leaked_ids": []}, "leaked_ids"),
        ({"leakage": 1, "leaked_ids": ["../../etc"]}, "leaked_ids"),
        ({"leakage": None, "leaked_ids": [example_id(GOOD)]}, "leakage"),
    ],
)
def test_records_with_bad_per_example_shapes_are_refused(
    published: Registry, tmp_path: Path, changes: dict[str, Any], bad: str
) -> None:
    record = good_record(**changes)
    clone = tmp_path / "clone-records"
    git(tmp_path, "clone", "-q", published.location, str(clone))
    git(clone, "checkout", "-q", "--orphan", "dspyreg/records")
    git(clone, "rm", "-rqf", ".")
    for version, data in (("v1.0", good_record()), ("v1.1", record)):
        (clone / f"qa/{version}/evaluations").mkdir(parents=True)
        (clone / f"qa/{version}/evaluations/1.json").write_text(json.dumps(data))
    git(clone, "add", ".")
    git(clone, *WHO, "commit", "-qm", "record by hand")
    git(clone, "push", "-q", "origin", "dspyreg/records")
    assert cli(published, "show", "v1.0", "--json").exit_code == 0  # the good one reads
    before = ref_snapshot(Path(published.location))
    for command in (["show", "v1.1"], ["diff", "v1.0", "v1.1", "--examples"], ["list"]):
        result = cli(published, *command)
        assert result.exit_code == 1, (command, result.output)
        assert f"is corrupt (bad or missing {bad})" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert ref_snapshot(Path(published.location)) == before
