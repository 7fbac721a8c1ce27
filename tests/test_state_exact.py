"""Exactness on real programs: strict, lossless JSON in and out; distinct prompt files; provenance of the saved state;
old DSPy state formats refused with what to do about them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dspy_registry.bundle import current_state, import_program
from dspy_registry.cli import app
from dspy_registry.errors import BadState
from dspy_registry.manifest import BadManifest, Manifest
from dspy_registry.registry import Registry

from .conftest import EXAMPLE_SPEC, git, publish_args, publish_example, ref_snapshot

runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def assert_refused(result: Any, registry: Path, before: str, *matches: str) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for match in matches:
        assert match in lines[0], lines[0]
    assert ref_snapshot(registry) == before
    return lines[0]


def _state(states: dict[str, Path]) -> dict[str, Any]:
    return json.loads(states["v1.0"].read_text())


def _written(tmp_path: Path, state: dict[str, Any]) -> Path:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))  # Python's json writes NaN and Infinity bare, as a hand-made state would
    return path


def _publish(registry_path: Path, state: Path, *extra: str) -> Any:
    return run(*publish_args(EXAMPLE_SPEC, state, "v1.0"), "--registry", str(registry_path), *extra)


# -- item 5: strict, lossless JSON -----------------------------------------------------------------------------------
def _nan_in_demo(state: dict[str, Any]) -> None:
    state["check"]["demos"][1]["score"] = float("nan")


def _infinity_in_lm(state: dict[str, Any]) -> None:
    state["answer.predict"]["lm"] = {"model": "openai/gpt-4o-mini", "temperature": float("inf")}


NON_FINITE: dict[str, tuple[Callable[[dict[str, Any]], None], tuple[str, ...]]] = {
    "NaN in a demo": (_nan_in_demo, ("'check'", "demo 1", "'score'", "NaN")),
    "Infinity in an LM state": (_infinity_in_lm, ("'answer.predict'", "lm.temperature", "Infinity")),
}


@pytest.mark.parametrize("case", list(NON_FINITE))
def test_non_finite_numbers_are_refused_at_publish(
    case: str, registry_path: Path, states: dict[str, Path], tmp_path: Path
) -> None:
    edit, matches = NON_FINITE[case]
    state = _state(states)
    edit(state)
    before = ref_snapshot(registry_path)
    assert_refused(_publish(registry_path, _written(tmp_path, state)), registry_path, before, *matches)


def test_diff_prints_non_finite_numbers_and_its_json_stays_strict(states: dict[str, Path], tmp_path: Path) -> None:
    state = _state(states)
    _nan_in_demo(state)
    path = _written(tmp_path, state)
    text = run("diff", str(states["v1.0"]), str(path))
    assert text.exit_code == 0, text.output
    assert "NaN" in text.stdout
    out = run("diff", str(states["v1.0"]), str(path), "--format", "json")
    assert out.exit_code == 0, out.output

    def refuse(name: str) -> Any:
        raise AssertionError(f"bare {name} in --format json output")

    parsed = json.loads(out.stdout, parse_constant=refuse)
    assert "NaN" in json.dumps(parsed)  # printed, as a string, not dropped


@pytest.mark.parametrize("demo", ["a string", [1, 2], 3])
def test_a_demo_that_is_not_an_object_is_refused(
    demo: Any, registry_path: Path, states: dict[str, Path], tmp_path: Path
) -> None:
    state = _state(states)
    state["check"]["demos"][1] = demo
    before = ref_snapshot(registry_path)
    assert_refused(
        _publish(registry_path, _written(tmp_path, state)), registry_path, before, "'check'", "demo 1", "object"
    )


@pytest.mark.parametrize("option", ["--notes", "--optimizer", "--lm"])
def test_a_lone_surrogate_in_an_option_is_refused(option: str, registry_path: Path, states: dict[str, Path]) -> None:
    before = ref_snapshot(registry_path)
    # What the shell passes for bytes that are not UTF-8: Python decodes argv with surrogateescape.
    result = _publish(registry_path, states["v1.0"], option, "caf\udce9")
    assert_refused(result, registry_path, before, option, "not valid Unicode")


COLLIDING = """
import dspy


class Prog(dspy.Module):
    def __init__(self):
        super().__init__()
        self.hops = [dspy.Predict("question -> answer"), dspy.Predict("question -> answer")]
        self.hops_0_ = dspy.Predict("question -> answer")
        self.Hops_1_ = dspy.Predict("question -> answer")

    def forward(self, question):
        return self.hops_0_(question=question)
"""


def test_predictor_names_that_sanitize_alike_get_distinct_prompt_files(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "hops.py").write_text(COLLIDING)
    source = import_program(f"{tmp_path / 'hops.py'}:Prog")
    result = registry.publish(source, current_state(source.program), name="hops", version="v1.0")
    prompt_files = sorted(f for f in result.files if f.startswith("prompts/"))
    names = ["hops[0]", "hops[1]", "hops_0_", "Hops_1_"]
    assert len(prompt_files) == len(names)
    assert len({f.casefold() for f in prompt_files}) == len(names)  # distinct on a case-insensitive disk too
    headings = {git(Path(registry.location), "show", f"hops/v1.0:hops/{f}").splitlines()[0] for f in prompt_files}
    assert headings == {f"# {name}" for name in names}
    again = registry.publish(source, current_state(source.program), name="hops", version="v1.1")
    assert sorted(f for f in again.files if f.startswith("prompts/")) == prompt_files  # deterministic


# -- item 6: provenance and old formats ------------------------------------------------------------------------------
def test_manifest_records_what_saved_the_state(published: Registry, states: dict[str, Path]) -> None:
    saved = _state(states)["metadata"]["dependency_versions"]
    manifest = published.show("v1.0").manifest
    assert dict(manifest.saved_with) == saved
    assert manifest.runtime["dspy"] == saved["dspy"]  # beside, not instead of, the publisher's runtime
    assert "[saved_with]" in Manifest.dumps(manifest)


def test_show_and_diff_print_saved_with(registry: Registry, states: dict[str, Path], tmp_path: Path) -> None:
    publish_example(registry, states["v1.0"], "v1.0")
    state = _state(states)
    state["metadata"]["dependency_versions"]["dspy"] = "3.3.0"
    publish_example(registry, _written(tmp_path, state), "v1.1")
    path = registry.location
    shown = run("show", "v1.0", "--registry", path, "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["manifest"]["saved_with"] == _state(states)["metadata"]["dependency_versions"]
    text = run("show", "v1.1", "--registry", path)
    assert any(line.startswith("saved with") and "dspy 3.3.0" in line for line in text.stdout.splitlines())
    assert (
        registry.view("v1.0").metadata["saved_with.dspy"] == _state(states)["metadata"]["dependency_versions"]["dspy"]
    )
    out = run("diff", "v1.0", "v1.1", "--registry", path, "--format", "json")
    assert out.exit_code == 0, out.output
    change = json.loads(out.stdout)["metadata"]["saved_with.dspy"]
    assert change == {"before": _state(states)["metadata"]["dependency_versions"]["dspy"], "after": "3.3.0"}
    assert "saved_with.dspy" in run("diff", "v1.0", "v1.1", "--registry", path).stdout


def test_schema_1_manifest_without_saved_with_still_reads(published: Registry) -> None:
    text = Manifest.dumps(published.show("v1.0").manifest)
    head, _, rest = text.partition("[saved_with]")
    old = head + "[" + rest.split("\n[", 1)[1]  # the manifest as dspyreg wrote it before [saved_with]
    manifest = Manifest.loads(old)
    assert manifest.schema_version == 1 and dict(manifest.saved_with) == {}
    assert manifest.dumps() == old


def test_a_state_saved_by_another_dspy_minor_is_published_with_a_warning(
    registry_path: Path, states: dict[str, Path], tmp_path: Path
) -> None:
    state = _state(states)
    state["metadata"]["dependency_versions"]["dspy"] = "3.3.0"
    result = _publish(registry_path, _written(tmp_path, state))
    assert result.exit_code == 0, result.output
    warnings = [ln for ln in result.stderr.splitlines() if "saved by DSPy 3.3.0" in ln]
    assert len(warnings) == 1 and "warning:" in warnings[0], result.stderr
    manifest = git(registry_path, "show", "qa/v1.0:qa/manifest.toml")
    assert 'dspy = "3.3.0"' in manifest
    # The same minor version (a patch apart) is not worth a warning.
    saved = _state(states)["metadata"]["dependency_versions"]["dspy"]
    state["metadata"]["dependency_versions"]["dspy"] = ".".join(saved.split(".")[:2]) + ".999"
    again = run(*publish_args(EXAMPLE_SPEC, _written(tmp_path, state), "v1.1"), "--registry", str(registry_path))
    assert again.exit_code == 0, again.output
    assert "saved by DSPy" not in again.stderr


def test_malformed_metadata_is_refused(registry_path: Path, states: dict[str, Path], tmp_path: Path) -> None:
    state = _state(states)
    state["metadata"] = {"dependency_versions": ["dspy", "3.4.1"]}
    before = ref_snapshot(registry_path)
    assert_refused(_publish(registry_path, _written(tmp_path, state)), registry_path, before, "metadata")
    diffed = run("diff", str(states["v1.0"]), str(_written(tmp_path, state)))
    assert diffed.exit_code == 0, diffed.output  # diff reads it without crashing


LEGACY_24 = {  # what DSPy before 2.5.3 saved for a Predict: no `signature`, its instructions and last prefix
    "lm": None,
    "traces": [],
    "train": [],
    "demos": [],
    "signature_instructions": "Check the answer.",
    "signature_prefix": "Supported:",
}


def _legacy_24(state: dict[str, Any]) -> None:
    for name in ("generate_query", "check"):
        state[name] = dict(LEGACY_24)
    state["answer"] = {**LEGACY_24, "extended_signature_instructions": "x", "extended_signature_prefix": "y"}
    del state["answer.predict"], state["metadata"]


def _legacy_25_cot(state: dict[str, Any]) -> None:
    entry = state.pop("answer.predict")
    state["answer._predict"] = {**entry, "extended_signature": entry["signature"]}


def _no_signature(state: dict[str, Any]) -> None:
    del state["check"]["signature"]


OLD_FORMATS: dict[str, tuple[Callable[[dict[str, Any]], None], tuple[str, ...]]] = {
    "DSPy 2.4 (signature_instructions)": (_legacy_24, ("DSPy < 2.5.3", "use_legacy_loading=True", "program.save(")),
    "DSPy 2.5 ChainOfThought (extended_signature)": (_legacy_25_cot, ("DSPy < 2.6", "extended_signature")),
    "a predictor without signature": (_no_signature, ("'check'", "DSPy < 2.5.3", "program.save(")),
}


@pytest.mark.parametrize("case", list(OLD_FORMATS))
def test_old_dspy_formats_are_refused_with_how_to_resave(
    case: str, registry_path: Path, states: dict[str, Path], tmp_path: Path
) -> None:
    edit, matches = OLD_FORMATS[case]
    state = _state(states)
    edit(state)
    before = ref_snapshot(registry_path)
    line = assert_refused(_publish(registry_path, _written(tmp_path, state)), registry_path, before, *matches)
    assert "lacks" not in line  # the format is the problem, not the names


def test_top_level_keys_that_are_not_predictors_are_not_called_predictors(
    registry_path: Path, states: dict[str, Path], tmp_path: Path
) -> None:
    state = _state(states)
    state["comment"] = "saved by hand"
    before = ref_snapshot(registry_path)
    line = assert_refused(
        _publish(registry_path, _written(tmp_path, state)), registry_path, before, "top-level key 'comment'"
    )
    assert "predictors" not in line


def test_publish_example_keeps_saved_with(registry: Registry, states: dict[str, Path]) -> None:
    publish_example(registry, states["v1.1"], "v2.0")
    assert registry.show("v2.0").manifest.saved_with["python"]


def test_the_python_api_refuses_text_that_is_not_unicode(registry: Registry, states: dict[str, Path]) -> None:
    with pytest.raises(BadState, match="notes is not valid Unicode"):
        publish_example(registry, states["v1.0"], "v1.0", notes="caf\udce9")
    assert registry.versions() == []


def test_a_forged_saved_with_table_is_a_bad_manifest(published: Registry) -> None:
    text = Manifest.dumps(published.show("v1.0").manifest)
    forged = text.replace('[saved_with]\npython = "', '[saved_with]\nbroken = 3\npython = "')
    assert forged != text
    with pytest.raises(BadManifest, match=r"\[saved_with\] must be a table of version strings"):
        Manifest.loads(forged)
