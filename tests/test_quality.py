"""Quality records and gates: `dspyreg eval` and `bench` against a fake LM on 127.0.0.1, gates in registry.toml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.errors import GateRefused
from dspy_registry.registry import Registry

from .conftest import ROOT, git, ref_snapshot

runner = CliRunner()
METRIC = f"{ROOT / 'examples' / 'metric.py'}:answer_match"


def cli(registry: Registry, *args: str) -> Any:
    return runner.invoke(app, [*args, "--registry", registry.location])


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def devset(tmp_path: Path) -> Path:
    """Four questions; the fake LM answers "JSON" to all, so exactly three of four match."""
    answers = ["JSON", "json", "Pickle", " JSON "]
    return write_jsonl(tmp_path / "dev.jsonl", [{"question": f"q{i}?", "answer": a} for i, a in enumerate(answers)])


def test_eval_records_the_exact_score(published: Registry, fake_lm: Any, devset: Path) -> None:
    fake_lm.overrides["answer"] = "JSON"
    result = cli(published, "eval", "v1.1", "--devset", str(devset), "--metric", METRIC, "--threads", "2", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["score"] == 0.75 and record["n"] == 4 and record["metric"] == METRIC
    assert record["lm"] == "openai/fake-model" and len(record["devset_sha256"]) == 64
    assert record["commit"] == published.resolve("v1.1").commit
    assert len(fake_lm.requests) == 4 * 3  # every example reached the LM: no cache
    shown = json.loads(cli(published, "show", "v1.1", "--json").stdout)
    assert [e["score"] for e in shown["evaluations"]] == [0.75] and shown["benchmarks"] == []
    # A record for one version never shows on another.
    assert json.loads(cli(published, "show", "v1.0", "--json").stdout)["evaluations"] == []
    listed = {v["version"]: v for v in json.loads(cli(published, "list", "--json").stdout)}
    assert listed["v1.1"]["eval_score"] == 0.75 and listed["v1.1"]["dev_score"] == 0.7
    assert listed["v1.0"]["eval_score"] is None
    diff = json.loads(cli(published, "diff", "v1.0", "v1.1", "--format", "json").stdout)
    assert diff["metadata"]["eval.score"] == {"before": None, "after": 0.75}


def test_bench_records_latency_tokens_and_cost(published: Registry, fake_lm: Any, devset: Path, tmp_path: Path) -> None:
    fake_lm.latency_ms = 30
    result = cli(published, "bench", "v1.1", "--inputs", str(devset), "-n", "6", "--concurrency", "3", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["n"] == 6 and record["concurrency"] == 3
    assert record["p50_ms"] >= 3 * 30 and record["max_ms"] >= record["p95_ms"] >= record["p50_ms"]
    assert record["tokens_per_query"] > 0 and record["cost_per_query"] is None  # the fake model has no price
    assert len(fake_lm.requests) == 6 * 3  # labels ignored, cache off: every query reached the LM
    shown = json.loads(cli(published, "show", "v1.1", "--json").stdout)
    assert shown["benchmarks"][0]["p50_ms"] == record["p50_ms"]
    published.promote("v1.1", "prod")
    export = cli(published, "export", "prod", str(tmp_path / "deploy"))
    assert export.exit_code == 0, export.output
    performance = json.loads((tmp_path / "deploy" / "config.json").read_text())["performance"]
    assert performance["avg_latency_ms"] == record["mean_ms"] and performance["dev_score"] == 0.7


def test_cost_is_known_for_a_priced_model(
    published: Registry, fake_lm: Any, devset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPYREG_LM_MODEL", "openai/gpt-4o-mini")  # DSPy knows its price; the server is still fake
    record = json.loads(cli(published, "bench", "v1.1", "--inputs", str(devset), "--json").stdout)
    assert record["cost_per_query"] is not None and record["cost_per_query"] > 0


def test_records_survive_a_fresh_clone(published: Registry, fake_lm: Any, devset: Path, tmp_path: Path) -> None:
    fake_lm.overrides["answer"] = "JSON"
    assert cli(published, "eval", "v1.0", "--devset", str(devset), "--metric", METRIC).exit_code == 0
    clone = tmp_path / "fresh-clone.git"
    git(tmp_path, "clone", "-q", "--mirror", published.location, str(clone))
    with Registry.open(clone) as reg:
        assert reg.show("v1.0").records.latest_score == 0.75
        assert reg.show("v1.1").records.evaluations == ()


@pytest.mark.parametrize(
    "lines,match",
    [
        (['{"question": "ok?", "answer": "JSON"}', "{not json"], "dev.jsonl:2: not JSON"),
        (
            ['{"question": "ok?", "answer": "JSON"}', '{"answer": "JSON"}'],
            "dev.jsonl:2: lacks the input field question",
        ),
        (['["a list"]'], "dev.jsonl:1: expected a JSON object"),
        ([], "holds no examples"),
    ],
)
def test_bad_devsets_record_nothing(
    published: Registry, fake_lm: Any, tmp_path: Path, lines: list[str], match: str
) -> None:
    path = write_jsonl(tmp_path / "dev.jsonl", lines)
    before = ref_snapshot(Path(published.location))
    for command in (
        ["eval", "v1.1", "--devset", str(path), "--metric", METRIC],
        ["bench", "v1.1", "--inputs", str(path)],
    ):
        result = cli(published, *command)
        assert result.exit_code == 1 and match in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    assert ref_snapshot(Path(published.location)) == before


def test_bad_metrics_record_nothing(published: Registry, fake_lm: Any, devset: Path, tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import no_such_module_at_all\n")
    (tmp_path / "raises.py").write_text(
        "def metric(example, prediction, trace=None):\n    raise ValueError('bad metric')\n"
    )
    before = ref_snapshot(Path(published.location))
    cases = [
        (f"{tmp_path / 'broken.py'}:metric", "does not import: ModuleNotFoundError"),
        (f"{tmp_path / 'raises.py'}:metric", "raised on line 1: ValueError: bad metric"),
        (f"{tmp_path / 'raises.py'}:nope", "nope is not a function"),
        ("no_colon", "invalid metric"),
    ]
    for metric, match in cases:
        result = cli(published, "eval", "v1.1", "--devset", str(devset), "--metric", metric, "--threads", "1")
        assert result.exit_code == 1 and match in result.stderr, result.output
    assert ref_snapshot(Path(published.location)) == before


def _gates(registry: Registry, tmp_path: Path, toml: str) -> None:
    clone = tmp_path / "gates-clone"
    git(tmp_path, "clone", "-q", registry.location, str(clone))
    (clone / "registry.toml").write_text((clone / "registry.toml").read_text() + toml)
    git(clone, "-c", "user.name=R", "-c", "user.email=r@x", "commit", "-qam", "gates")
    git(clone, "push", "-q", "origin", "main")


def test_gates_refuse_then_force_with_reason(published: Registry, fake_lm: Any, devset: Path, tmp_path: Path) -> None:
    _gates(published, tmp_path, "\n[gates.prod]\nmin_dev_score = 0.8\nno_regression = true\nrequire_eval = true\n")
    fake_lm.overrides["answer"] = "JSON"
    refused = r"no evaluation record.*scores 0.700, below min_dev_score 0.800"
    with Registry.open(published.location) as reg, pytest.raises(GateRefused, match=refused):
        reg.promote("v1.1", "prod")
    assert cli(published, "eval", "v1.1", "--devset", str(devset), "--metric", METRIC).exit_code == 0
    before = ref_snapshot(Path(published.location))
    result = cli(published, "promote", "v1.1", "--to", "prod")
    assert result.exit_code == 1 and "scores 0.750, below min_dev_score 0.800" in result.stderr
    assert "no evaluation record" not in result.stderr and ref_snapshot(Path(published.location)) == before
    assert cli(published, "promote", "v1.1", "--to", "prod", "--force").exit_code == 1  # --force needs --reason
    forced = cli(published, "promote", "v1.1", "--to", "prod", "--force", "--reason", "hotfix for outage")
    assert forced.exit_code == 0 and "overriding gates" in forced.stdout
    entry = json.loads(cli(published, "log", "--env", "prod", "--json").stdout)[-1]
    assert entry["to_version"] == "v1.1" and entry["reason"] == "hotfix for outage"
    assert "below min_dev_score 0.800" in entry["override"]
    # no_regression: v1.0 (dev score 0.6, no eval) may not replace v1.1 (0.75).
    result = cli(published, "promote", "v1.0", "--to", "prod")
    assert result.exit_code == 1 and "below prod's v1.1 at 0.750 (no_regression)" in result.stderr
    with Registry.open(published.location) as reg:
        assert reg.resolve("prod").version == "v1.1"


def test_no_gates_behave_as_before(published: Registry) -> None:
    assert cli(published, "promote", "v1.0", "--to", "prod").exit_code == 0
    assert cli(published, "promote", "v1.1", "--to", "staging").exit_code == 0


def test_eval_with_the_examples_devset_and_metric(published: Registry, fake_lm: Any) -> None:
    """examples/devset.jsonl has six questions; only one expects "JSON", the fake LM's answer to every question."""
    fake_lm.overrides["answer"] = "JSON"
    devset = ROOT / "examples" / "devset.jsonl"
    result = cli(published, "eval", "v1.0", "--devset", str(devset), "--metric", METRIC, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["n"] == 6 and record["score"] == round(1 / 6, 6) and record["devset"] == "devset.jsonl"


def test_records_of_one_second_keep_the_order_they_were_written(
    published: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Latest" is the last written, even when two evaluations land in the same second and the later one's random id
    sorts first."""
    import uuid
    from datetime import datetime, timezone

    from dspy_registry import records

    times = iter(
        [datetime(2026, 1, 1, 12, 0, 0, 1, tzinfo=timezone.utc), datetime(2026, 1, 1, 12, 0, 0, 2, tzinfo=timezone.utc)]
    )
    ids = iter([uuid.UUID(int=2**128 - 1), uuid.UUID(int=0)])
    monkeypatch.setattr(records, "precise_now", lambda: next(times))
    monkeypatch.setattr(records.uuid, "uuid4", lambda: next(ids))
    for score in (0.25, 0.75):
        records.append(published.store, "qa", "v1.1", "evaluations", {"metric": "m", "score": score, "n": 4})
    assert published.records(published.resolve("v1.1")).latest_score == 0.75
