"""The facade on real registries: publish, list, show, log, promote, rollback, load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dspy
import pytest
import tomlkit
import yaml
from dspy.utils import DummyLM

import dspy_registry
from dspy_registry.errors import DuplicateVersion, InvalidName, NotARegistry, NothingToRollBack, UnknownRef
from dspy_registry.registry import Registry
from dspy_registry.state import read_state_file

from .conftest import EXAMPLE_SPEC, git, publish_example, ref_snapshot


def test_init_makes_main_and_journal(registry_path: Path) -> None:
    assert git(registry_path, "rev-parse", "--is-bare-repository").strip() == "true"
    assert set(git(registry_path, "ls-tree", "--name-only", "main").split()) == {
        ".gitattributes",
        ".github",
        "README.md",
        "registry.toml",
    }
    workflow = yaml.safe_load(git(registry_path, "show", "main:.github/workflows/dspyreg-verify.yml"))
    steps = [step.get("run", "") for step in workflow["jobs"]["verify"]["steps"]]
    assert "dspyreg verify --all --registry ." in steps
    config = tomlkit.parse(git(registry_path, "show", "main:registry.toml"))
    assert config["schema_version"] == 1 and config["environments"]["order"] == ["staging", "prod"]
    assert git(registry_path, "rev-parse", "--verify", "refs/heads/dspyreg/journal")


def test_init_refuses_an_existing_registry_or_a_non_empty_folder(registry_path: Path, tmp_path: Path) -> None:
    with pytest.raises(NotARegistry, match="already has a main branch"):
        Registry.init(registry_path)
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "file").write_text("x")
    with pytest.raises(NotARegistry, match="not empty"):
        Registry.init(tmp_path / "stuff")


def test_open_refuses_a_git_repository_that_is_not_a_registry(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "plain")
    with pytest.raises(NotARegistry, match="not a dspyreg registry"):
        Registry.open(tmp_path / "plain")


def test_publish_writes_the_bundle_in_one_commit(published: Registry, registry_path: Path) -> None:
    files = set(git(registry_path, "ls-tree", "-r", "--name-only", "qa/v1.1").split())
    assert {
        "qa/manifest.toml",
        "qa/program.json",
        "qa/prompts.json",
        "qa/code/qa_program.py",
        "qa/prompts/generate_query.md",
        "qa/prompts/answer.predict.md",
        "qa/prompts/check.md",
    } <= files
    # One commit per publish on main; the version tag is annotated, named <program>/<version>, and never moves.
    assert git(registry_path, "rev-list", "--count", "main").strip() == "3"
    assert git(registry_path, "cat-file", "-t", "refs/tags/qa/v1.1").strip() == "tag"
    assert "tag qa/v1.1" in git(registry_path, "cat-file", "-p", "refs/tags/qa/v1.1")
    assert git(registry_path, "rev-parse", "qa/v1.1^{commit}") == git(registry_path, "rev-parse", "main")
    git(registry_path, "fsck", "--strict", "--no-dangling")


def test_manifest_and_files_agree(published: Registry, registry_path: Path, states: dict[str, Path]) -> None:
    import hashlib

    manifest = tomlkit.parse(git(registry_path, "show", "qa/v1.0:qa/manifest.toml"))
    assert manifest["program"]["name"] == "qa" and manifest["program"]["version"] == "v1.0"
    assert manifest["program"]["entrypoint"] == "qa_program:DocsQA"
    assert manifest["optimization"] == {"optimizer": "BootstrapFewShot", "trainset_size": 8, "dev_score": 0.6}
    assert manifest["runtime"]["dspy"] == dspy.__version__
    for path, digest in manifest["files"].items():
        data = published.store.read_blob("refs/tags/qa/v1.0", f"qa/{path}")
        assert data is not None and hashlib.sha256(data).hexdigest() == digest, path
    # program.json is the saved state with sorted keys: same content as what program.save() wrote.
    stored = json.loads(git(registry_path, "show", "qa/v1.0:qa/program.json"))
    assert stored == json.loads(states["v1.0"].read_text())


def test_prompts_json_has_typed_fields_and_demos(published: Registry, registry_path: Path) -> None:
    prompts = json.loads(git(registry_path, "show", "qa/v1.1:qa/prompts.json"))
    assert set(prompts) == {"generate_query", "answer.predict", "check"}
    answer = prompts["answer.predict"]
    assert answer["signature"] == "question, passages -> reasoning, answer, confidence"
    assert [(f["name"], f["type"]) for f in answer["inputs"]] == [("question", "str"), ("passages", "list[str]")]
    assert [(f["name"], f["type"]) for f in answer["outputs"]][-1] == ("confidence", "float")
    assert answer["instructions"].startswith("Using only facts")
    assert len(answer["demos"]) == 3
    rendered = git(registry_path, "show", "qa/v1.1:qa/prompts/answer.predict.md")
    assert answer["instructions"] in rendered and "[[ ## question ## ]]" in rendered and "{question}" in rendered
    assert answer["demos"][0]["question"] in rendered


def test_list_show_and_environments(published: Registry) -> None:
    published.promote("v1.0", "prod")
    published.promote("v1.1")
    versions = published.versions()
    assert [(v.version, v.environments) for v in versions] == [("v1.0", ("prod",)), ("v1.1", ("staging",))]
    assert versions[0].dev_score == 0.6 and len(versions[0].commit) == 40
    detail = published.show("prod")
    assert detail.info.version == "v1.0" and detail.info.environments == ("prod",)
    data = detail.to_json()
    assert set(data) >= {"name", "version", "commit", "created", "environments", "manifest", "predictors"}
    assert published.show("qa/staging").info.version == "v1.1"
    assert published.show(published.show("v1.1").info.commit[:12]).info.version == "v1.1"


def test_promote_staging_then_rollback(published: Registry, registry_path: Path) -> None:
    published.promote("v1.0", "prod", reason="first")
    published.promote("v1.1")
    moved = published.promote("staging", reason="good")
    assert [(e.env, e.from_version, e.to_version) for e in moved.entries] == [
        ("prod", "v1.0", "v1.1"),
        ("rollback", None, "v1.0"),
    ]
    assert published.resolve("rollback").version == "v1.0"
    back = published.rollback(reason="regression")
    assert published.resolve("prod").version == "v1.0"  # prod is the previous prod
    assert [(e.env, e.action, e.to_version) for e in back.entries] == [
        ("prod", "rollback", "v1.0"),
        ("rollback", "managed", None),
    ]
    with pytest.raises(UnknownRef, match="is unset"):
        published.resolve("rollback")
    with pytest.raises(NothingToRollBack, match="nothing to roll back"):
        published.rollback()
    # Every move is journaled with the reason, oldest first.
    log = published.log()
    assert [(e.env, e.from_version, e.to_version, e.action) for e in log] == [
        ("prod", None, "v1.0", "promote"),
        ("staging", None, "v1.1", "promote"),
        ("prod", "v1.0", "v1.1", "promote"),
        ("rollback", None, "v1.0", "managed"),
        ("prod", "v1.1", "v1.0", "rollback"),
        ("rollback", "v1.0", None, "managed"),
    ]
    assert log[-2].reason == "regression" and log[0].actor == "Test Author <author@example.com>"
    assert [e.to_version for e in published.log(env="staging")] == ["v1.1"]
    # Environment tags are annotated and record who, when, from which version and why.
    body = git(registry_path, "cat-file", "-p", "refs/tags/qa/prod")
    assert "tag qa/prod" in body and '"reason": "regression"' in body and '"from_version": "v1.1"' in body
    git(registry_path, "fsck", "--strict", "--no-dangling")


def test_rollback_walks_back(published: Registry, states: dict[str, Path]) -> None:
    publish_example(published, states["v1.0"], "v1.2")
    for version in ("v1.0", "v1.1", "v1.2"):
        published.promote(version, "prod")
    assert published.resolve("rollback").version == "v1.1"
    published.rollback()
    assert (published.resolve("prod").version, published.resolve("rollback").version) == ("v1.1", "v1.0")
    published.rollback()
    assert published.resolve("prod").version == "v1.0"
    with pytest.raises(NothingToRollBack):
        published.rollback()


def test_promote_rules(published: Registry) -> None:
    with pytest.raises(UnknownRef, match="not published"):
        published.promote("v9.9")
    with pytest.raises(UnknownRef, match="unknown environment"):
        published.promote("v1.0", "qa-env")
    with pytest.raises(UnknownRef, match="is unset"):
        published.promote("staging")
    published.promote("v1.0", "prod")
    with pytest.raises(InvalidName, match="last environment"):
        published.promote("prod")
    with pytest.raises(InvalidName, match="managed"):
        published.promote("v1.0", "rollback")
    assert not published.promote("v1.0", "prod").changed  # already there: nothing moves, nothing journaled


def test_duplicate_versions_are_refused(published: Registry, states: dict[str, Path]) -> None:
    with pytest.raises(DuplicateVersion, match="already published"):
        publish_example(published, states["v1.0"], "v1.0")
    with pytest.raises(DuplicateVersion, match="same release"):
        publish_example(published, states["v1.0"], "1.0.0")


def test_several_programs(published: Registry, states: dict[str, Path], registry_path: Path) -> None:
    publish_example(published, states["v1.0"], "v0.1", name="faq")
    assert published.programs() == ["faq", "qa"]
    with pytest.raises(InvalidName, match="several programs"):
        published.resolve("v1.0")
    assert published.resolve("faq/v0.1").program == "faq"
    assert published.resolve("v1.1", "qa").version == "v1.1"
    # Publishing faq left qa's bundle untouched, so qa's history is only qa's publishes.
    assert len(git(registry_path, "log", "--format=%H", "main", "--", "qa/prompts.json").split()) == 2


def test_load_gives_the_published_program(published: Registry, states: dict[str, Path]) -> None:
    published.promote("v1.1", "prod")
    program = dspy_registry.load("qa", "prod", registry=published.location)
    state = read_state_file(states["v1.1"])
    for name, predictor in program.named_predictors():
        assert predictor.signature.instructions == state[name]["signature"]["instructions"]
        assert [dict(d) for d in predictor.demos] == state[name]["demos"]
    reply = {"query": "q", "reasoning": "r", "answer": "Use dspyreg.", "confidence": "0.8", "supported": "True"}
    with dspy.context(lm=DummyLM([reply] * 3)):
        prediction = program(question="How do I ship DSPy programs?")
    assert prediction.answer == "Use dspyreg." and prediction.confidence == 0.8 and prediction.supported is True


def test_python_publish_api(registry_path: Path, states: dict[str, Path]) -> None:
    from dspy_registry.bundle import import_program

    program = import_program(EXAMPLE_SPEC).program
    program.load(str(states["v1.1"]))
    lm = dspy.LM("openai/gpt-4o-mini", api_key="sk-caller", cache=False)
    program.check.lm = lm
    result = dspy_registry.publish(
        program,
        name="qa",
        version="2.0",
        registry=registry_path,
        optimizer="GEPA",
        dev_score=0.8,
        lm="openai/gpt-4o-mini",
    )
    assert result.version == "v2.0"
    with Registry.open(registry_path) as reg:
        manifest = reg.show("v2.0").manifest
        assert manifest.lm == {"model": "openai/gpt-4o-mini"} and manifest.optimization.optimizer == "GEPA"
        loaded = reg.load("v2.0")
    assert loaded.answer.predict.signature.instructions == program.answer.predict.signature.instructions
    assert program.check.lm is lm and lm.kwargs["api_key"] == "sk-caller"  # the caller's program is untouched
    assert loaded.check.lm is not None and "api_key" not in loaded.check.lm.kwargs


def test_python_publish_captures_a_class_from_the_running_script(registry_path: Path, tmp_path: Path) -> None:
    # Was refused ("defined in the script being run"); now the class is captured, not the script (which publishes).
    import subprocess
    import sys

    script = tmp_path / "job.py"
    script.write_text(
        "import dspy, dspy_registry\n"
        "class Tiny(dspy.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.p = dspy.Predict('q -> a')\n"
        "    def forward(self, q):\n        return self.p(q=q)\n"
        f"dspy_registry.publish(Tiny(), name='tiny', version='v1', registry={str(registry_path)!r})\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    code = git(registry_path, "show", "main:tiny/code/script_program.py")
    assert "class Tiny(dspy.Module):" in code and "dspy_registry.publish" not in code
    with Registry.open(registry_path) as reg:
        assert reg.manifest(reg.resolve("v1", "tiny")).program.entrypoint == "script_program:Tiny"
        assert reg.load("v1", "tiny").p.signature.signature == "q -> a"


def test_secrets_are_stripped_with_a_warning(registry: Registry, states: dict[str, Path], tmp_path: Path) -> None:
    from dspy_registry.bundle import import_program

    state = read_state_file(states["v1.0"])
    state["check"]["lm"] = {
        "model": "openai/gpt-4o-mini",
        "api_key": "sk-secret",
        "api_base": "http://x",
        "temperature": 0.0,
    }
    result = registry.publish(import_program(EXAMPLE_SPEC), state, name="qa", version="v1.0")
    assert any("api_key" in w for w in result.warnings) and any("api_base" in w for w in result.warnings)
    stored = registry.store.read_blob("refs/tags/qa/v1.0", "qa/program.json")
    assert stored is not None and b"sk-secret" not in stored and b"http://x" not in stored
    assert registry.show("v1.0").manifest.lm["model"] == "openai/gpt-4o-mini"


def test_a_registry_with_a_work_tree_works_too(tmp_path: Path, states: dict[str, Path]) -> None:
    with Registry.init(tmp_path / "wt", bare=False) as reg:
        publish_example(reg, states["v1.0"], "v1.0")
        reg.promote("v1.0", "prod")
        assert reg.resolve("prod").version == "v1.0"
    assert (tmp_path / "wt" / ".git").is_dir()


def test_bad_state_changes_nothing(registry: Registry, registry_path: Path, states: dict[str, Path]) -> None:
    from dspy_registry.errors import BadState

    before = ref_snapshot(registry_path)
    state = read_state_file(states["v1.0"])
    del state["check"]
    with pytest.raises(BadState, match="lacks check"):
        registry.publish(
            __import__("dspy_registry.bundle").bundle.import_program(EXAMPLE_SPEC), state, name="qa", version="v1.0"
        )
    assert ref_snapshot(registry_path) == before


def test_publish_can_record_the_example_output(registry_path: Path, fake_lm: Any) -> None:
    from dspy_registry.bundle import import_program
    from dspy_registry.runtime.inference import make_lm

    fake_lm.overrides["answer"] = "Recorded answer."
    program = import_program(EXAMPLE_SPEC).program
    lm = make_lm({})  # from the DSPYREG_LM_* variables: the fake LM
    dspy_registry.publish(program, name="qa", version="v3.0", registry=registry_path, lm=lm, record_example=True)
    output = json.loads(git(registry_path, "show", "qa/v3.0:qa/examples/output.json"))
    assert output["source"] == "recorded at publish with openai/fake-model"
    assert output["output"]["answer"] == "Recorded answer." and output["output"]["supported"] is True
