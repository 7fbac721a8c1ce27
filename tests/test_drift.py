"""DSPy drift: versions published or saved under another DSPy minor warn once on load, are refused under registry.toml's
[runtime] policy by load and serve, and are reported by verify (which imports no DSPy)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import dspy_registry
from dspy_registry.cli import app
from dspy_registry.errors import RuntimeDrift
from dspy_registry.registry import Registry
from dspy_registry.runtime import drift
from dspy_registry.runtime.drift import DriftWarning

from .conftest import git, publish_example, ref_snapshot
from .security.forge import forge_version
from .serving import dspyreg_serve

INSTALLED = version("dspy")
MAJOR, MINOR, PATCH = (int(part) for part in INSTALLED.split(".")[:3])
OTHER_MINOR = f"{MAJOR}.{MINOR + 1}.0"  # a DSPy minor other than the installed one
OTHER_PATCH = f"{MAJOR}.{MINOR}.{PATCH + 1}"
QUESTION = {"question": "What is DSPy?"}


@pytest.fixture(autouse=True)
def fresh_reports() -> None:
    """ "Once per process" is per test here: each test starts with nothing reported yet."""
    drift._reported.clear()


def saved_under(states: dict[str, Path], tmp_path: Path, dspy_version: str) -> Path:
    """The example's v1.1 state as `program.save` writes it under another DSPy (its metadata says so)."""
    state = json.loads(states["v1.1"].read_text())
    state["metadata"]["dependency_versions"]["dspy"] = dspy_version
    path = tmp_path / f"saved-{dspy_version}.json"
    path.write_text(json.dumps(state))
    return path


def set_policy(registry: Registry, tmp_path: Path, toml: str) -> None:
    clone = tmp_path / "policy-clone"
    git(tmp_path, "clone", "-q", registry.location, str(clone))
    (clone / "registry.toml").write_text((clone / "registry.toml").read_text() + toml)
    git(clone, "-c", "user.name=R", "-c", "user.email=r@x", "commit", "-qam", "runtime policy")
    git(clone, "push", "-q", "origin", "main")


def cli(reg: Registry, *args: str) -> Any:
    return CliRunner().invoke(app, [*args, "--registry", reg.location])


def test_another_minor_warns_once_per_process(published: Registry, states: dict[str, Path], tmp_path: Path) -> None:
    publish_example(published, saved_under(states, tmp_path, OTHER_MINOR), "v1.2")
    with pytest.warns(DriftWarning) as caught:
        dspy_registry.load("qa", "v1.2", registry=published.location)
        dspy_registry.load("qa", "v1.2", registry=published.location)
    drifted = [w for w in caught if issubclass(w.category, DriftWarning)]
    assert len(drifted) == 1
    message = str(drifted[0].message)
    assert f"saved with dspy {OTHER_MINOR}" in message and f"dspy {INSTALLED} is installed" in message


def test_a_recorded_publisher_runtime_of_another_minor_warns(published: Registry, tmp_path: Path) -> None:
    forge_version(Path(published.location), {}, version="v1.2", runtime={"dspy": OTHER_MINOR})
    with pytest.warns(DriftWarning, match=f"published with dspy {OTHER_MINOR}"):
        published.load("v1.2")


def test_a_patch_difference_is_silent(published: Registry, states: dict[str, Path], tmp_path: Path) -> None:
    publish_example(published, saved_under(states, tmp_path, OTHER_PATCH), "v1.2")
    publish_example(published, saved_under(states, tmp_path, OTHER_MINOR), "v1.3")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        published.load("v1.2")
        published.load("v1.3")
    drifted = [str(w.message) for w in caught if issubclass(w.category, DriftWarning)]
    assert len(drifted) == 1 and drifted[0].startswith("qa v1.3 ")  # the minor difference only


def test_the_policy_refuses_to_load_naming_both_versions(
    published: Registry, states: dict[str, Path], tmp_path: Path
) -> None:
    publish_example(published, saved_under(states, tmp_path, OTHER_MINOR), "v1.2")
    set_policy(published, tmp_path, '\n[runtime]\ndspy = "same-minor"\n')
    with pytest.raises(RuntimeDrift, match=rf"{OTHER_MINOR}.*{INSTALLED}.*same-minor|{OTHER_MINOR}.*{INSTALLED}"):
        dspy_registry.load("qa", "v1.2", registry=published.location)
    dspy_registry.load("qa", "v1.1", registry=published.location)  # same minor: loads


def test_serve_keeps_the_old_version_when_the_policy_refuses_the_new(
    prod_v11: Registry, states: dict[str, Path], fake_lm: Any, tmp_path: Path
) -> None:
    publish_example(prod_v11, saved_under(states, tmp_path, OTHER_MINOR), "v1.2")
    set_policy(prod_v11, tmp_path, '\n[runtime]\ndspy = "same-minor"\n')
    with dspyreg_serve(prod_v11.location, tmp_path, "--poll-seconds", "0.3") as srv:
        srv.wait_ready()
        with Registry.open(prod_v11.location) as reg:
            reg.promote("v1.2", "prod")
        deadline = time.time() + 30
        while "not_swapped_in" not in srv.get("/ready")[1] and time.time() < deadline:
            time.sleep(0.1)
        status, ready, _ = srv.get("/ready")
        assert status == 200 and ready["version"] == "v1.1"
        assert OTHER_MINOR in ready["not_swapped_in"]["error"] and INSTALLED in ready["not_swapped_in"]["error"]
        status, body, _ = srv.post("/predict", QUESTION)
        assert status == 200 and body["version"] == "v1.1"
        events = [e for e in srv.log_lines() if e.get("event") == "not_swapped_in"]
        assert events and "DriftRefused" in events[0]["error"]


def test_serve_with_nothing_allowed_to_serve_exits_1(
    prod_v11: Registry, states: dict[str, Path], tmp_path: Path
) -> None:
    publish_example(prod_v11, saved_under(states, tmp_path, OTHER_MINOR), "v1.2")
    prod_v11.promote("v1.2", "prod")
    set_policy(prod_v11, tmp_path, '\n[runtime]\ndspy = "same-minor"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "dspy_registry.cli", "serve", "--registry", prod_v11.location],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert OTHER_MINOR in lines[0] and INSTALLED in lines[0]


def test_verify_reports_drift_and_fails_under_the_policy(
    prod_v11: Registry, states: dict[str, Path], tmp_path: Path
) -> None:
    publish_example(prod_v11, saved_under(states, tmp_path, OTHER_MINOR), "v1.2")
    prod_v11.promote("v1.2", "prod")
    result = cli(prod_v11, "verify")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stdout and f"saved with dspy {OTHER_MINOR}" in result.stdout
    listed = json.loads(cli(prod_v11, "verify", "--json").stdout)
    assert [(e["subject"], e["level"]) for e in listed] == [("qa/v1.2", "warning")]
    assert cli(prod_v11, "verify", "v1.1").stdout.count("warning:") == 0
    set_policy(prod_v11, tmp_path, '\n[runtime]\ndspy = "same-minor"\n')
    result = cli(prod_v11, "verify", "--json")
    assert result.exit_code == 1
    listed = json.loads(result.stdout)
    assert [(e["subject"], e.get("level")) for e in listed] == [("qa/v1.2", None)]  # a problem, as verify lists them
    assert OTHER_MINOR in listed[0]["message"] and INSTALLED in listed[0]["message"]


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ('[runtime]\ndspy = "same-patch"', "[runtime] dspy must be one of"),
        ("[runtime]\ndspy = 3", "[runtime] dspy must be one of"),
        ('[runtime]\nnumpy = "any"', "[runtime] has unknown key numpy"),
    ],
)
def test_bad_policy_values_are_one_line_exit_1(published: Registry, tmp_path: Path, toml: str, error: str) -> None:
    set_policy(published, tmp_path, "\n" + toml + "\n")
    before = ref_snapshot(Path(published.location))
    result = cli(published, "verify")
    assert result.exit_code == 1 and error in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert ref_snapshot(Path(published.location)) == before
