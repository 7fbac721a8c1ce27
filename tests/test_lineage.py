"""[lineage] at publish: dataset digests, the optimizer's class and plain arguments (secrets dropped), the code's git
commit and dirty flag, the host's versions; shown by `show` and `diff`, checked by type when read back."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import version as installed
from pathlib import Path
from typing import Any

import dspy
import pytest
import tomlkit
from dspy.utils.dummies import DummyLM
from typer.testing import CliRunner

import dspy_registry
from dspy_registry.cli import app
from dspy_registry.provenance import dataset_digest
from dspy_registry.registry import Registry

from .conftest import EXAMPLE_SPEC, ROOT, git, publish_args, publish_example, ref_snapshot

runner = CliRunner()

PROGRAM = """
import dspy


class Brief(dspy.Signature):
    \"\"\"Answer in a few words.\"\"\"

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


class BriefQA(dspy.Module):
    def __init__(self):
        super().__init__()
        self.respond = dspy.Predict(Brief)

    def forward(self, question):
        return self.respond(question=question)
"""
TRAIN = [("What is DSPy?", "A framework."), ("What is git?", "A store."), ("Why JSON?", "Safe.")]
DEV = [{"question": "What is a tag?", "answer": "A name."}, {"answer": "Yes.", "question": "Is it pure?"}]


def sha_of(rows: list[dict[str, Any]]) -> str:
    """The documented digest, computed here on its own: the canonical JSON of the examples, in order."""
    text = json.dumps(rows, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def host() -> dict[str, str]:
    return {"python": platform.python_version(), "dspy": installed("dspy"), "litellm": installed("litellm")}


def manifest_of(registry: Path, ref: str) -> dict[str, Any]:
    return tomlkit.parse(git(registry, "show", f"{ref}:qa/manifest.toml")).unwrap()


def ok(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def work_tree(tmp_path: Path) -> Path:
    """The program's source in a real git work tree, committed."""
    tree = tmp_path / "project"
    tree.mkdir()
    (tree / "brief_qa.py").write_text(PROGRAM)
    git(tree, "init", "-q")
    git(tree, "add", "brief_qa.py")
    git(tree, "commit", "-qm", "program")
    return tree


def compiled(tree: Path, module_name: str) -> tuple[dspy.Module, dspy.BootstrapFewShot, list[dspy.Example]]:
    """BriefQA imported from the work tree and compiled offline by BootstrapFewShot with a DummyLM."""
    spec = importlib.util.spec_from_file_location(module_name, tree / "brief_qa.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # inspect finds the class's file through it
    spec.loader.exec_module(module)
    trainset = [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in TRAIN]
    optimizer = dspy.BootstrapFewShot(
        metric=lambda ex, pred, trace=None: bool(pred.answer), max_bootstrapped_demos=2, max_labeled_demos=3
    )
    with dspy.context(lm=DummyLM([{"answer": f"Scripted {i}."} for i in range(20)])):
        program = optimizer.compile(module.BriefQA(), trainset=trainset)
    return program, optimizer, trainset


def test_publish_records_lineage_clean_then_dirty(registry_path: Path, work_tree: Path) -> None:
    program, optimizer, trainset = compiled(work_tree, "lineage_brief_qa")
    head = git(work_tree, "rev-parse", "HEAD").strip()
    dspy_registry.publish(
        program, name="qa", version="v1.0", registry=registry_path, optimizer=optimizer, trainset=trainset, devset=DEV
    )
    m = manifest_of(registry_path, "qa/v1.0")
    train_rows = [{"question": q, "answer": a} for q, a in TRAIN]
    assert m["lineage"] == {
        "trainset": {"sha256": sha_of(train_rows), "size": 3},
        "devset": {"sha256": sha_of(DEV), "size": 2},
        # metric_threshold and max_errors are None (TOML has no null), teacher_settings a dict, metric code: left out
        "optimizer": {
            "class": "BootstrapFewShot",
            "args": {"max_bootstrapped_demos": 2, "max_labeled_demos": 3, "max_rounds": 1},
        },
        "code": {"commit": head, "dirty": False},
        "host": host(),
    }
    assert m["optimization"] == {"optimizer": "BootstrapFewShot", "trainset_size": 3}

    (work_tree / "brief_qa.py").write_text(PROGRAM + "\n# tuned\n")  # edited after the commit: dirty
    dspy_registry.publish(program, name="qa", version="v1.1", registry=registry_path, optimizer="MIPROv2")
    m = manifest_of(registry_path, "qa/v1.1")
    assert m["lineage"] == {"code": {"commit": head, "dirty": True}, "host": host()}
    assert m["optimization"] == {"optimizer": "MIPROv2"}


def test_a_given_trainset_size_must_agree(registry_path: Path, work_tree: Path) -> None:
    program, _, trainset = compiled(work_tree, "lineage_brief_qa_size")
    before = ref_snapshot(registry_path)
    with pytest.raises(dspy_registry.RegistryError, match="trainset size 8 disagrees with the trainset given"):
        dspy_registry.publish(
            program, name="qa", version="v1.0", registry=registry_path, trainset=trainset, trainset_size=8
        )
    assert ref_snapshot(registry_path) == before


class LeakyOptimizer:
    """An optimizer that keeps what it was given, secrets included."""

    def __init__(self, api_key: str, note: str, prompt_model: Any, max_steps: int = 3, metric: Any = None) -> None:
        self.api_key = api_key
        self.note = note
        self.prompt_model = prompt_model
        self.max_steps = max_steps
        self.metric = metric
        self.scratch = "not a constructor argument"


def test_secrets_in_optimizer_args_are_dropped_with_a_warning(registry_path: Path, states: dict[str, Path]) -> None:
    lm = dspy.LM("openai/gpt-4o-mini", api_key="sk-lmkeylmkeylmkeylmkey0001", temperature=0.3)
    leaky = LeakyOptimizer("plain-looking-key", "sk-abcdefghijklmnopqrstuv", lm, metric=lambda *a: 1)
    with Registry.open(registry_path) as reg:
        commit = publish_example(reg, states["v1.0"], "v1.0", optimizer=leaky)
    m = manifest_of(registry_path, "qa/v1.0")
    assert m["lineage"]["optimizer"] == {
        "class": "LeakyOptimizer",
        "args": {"prompt_model": "openai/gpt-4o-mini", "max_steps": 3},
    }
    bundle = subprocess.run(
        ["git", "-C", str(registry_path), "archive", "--format=tar", commit], check=True, capture_output=True
    ).stdout
    for secret in (b"plain-looking-key", b"sk-abcdefghijklmnopqrstuv", b"sk-lmkeylmkeylmkeylmkey0001"):
        assert secret not in bundle


def test_optimizer_secret_warnings_name_the_key(registry_path: Path, states: dict[str, Path]) -> None:
    leaky = LeakyOptimizer("plain-looking-key", "sk-abcdefghijklmnopqrstuv", None)
    with Registry.open(registry_path) as reg:
        from dspy_registry.bundle import import_program
        from dspy_registry.state import read_state_file

        result = reg.publish(
            import_program(EXAMPLE_SPEC), read_state_file(states["v1.0"]), name="qa", version="v1.0", optimizer=leaky
        )
    found = [w for w in result.warnings if "optimizer's arguments" in w]
    assert [w.split("'")[1] for w in found] == ["api_key", "note"]
    assert not any("sk-abcdefghijklmnopqrstuv" in w or "plain-looking-key" in w for w in result.warnings)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + "\n")  # a blank line at the end is allowed
    return path


def test_cli_trainset_and_devset_files(tmp_path: Path, registry_path: Path, states: dict[str, Path]) -> None:
    # The example program copied outside any git work tree: no [lineage.code].
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(ROOT / "examples" / "qa_program.py", outside / "qa_program.py")
    spec = f"{outside / 'qa_program.py'}:DocsQA"
    train = [{"question": "q1", "answer": "a1"}, {"answer": "a2", "question": "q2"}, {"question": "q3", "answer": "é"}]
    train_file = write_jsonl(tmp_path / "train.jsonl", train)
    dev_file = write_jsonl(tmp_path / "dev.jsonl", DEV)
    out = ok(
        *publish_args(spec, states["v1.0"], "v1.0"),
        "--registry",
        str(registry_path),
        "--trainset",
        str(train_file),
        "--devset",
        str(dev_file),
        "--optimizer",
        "GEPA",
    )
    assert "v1.0" in out
    m = manifest_of(registry_path, "qa/v1.0")
    assert m["lineage"] == {
        "trainset": {"sha256": sha_of(train), "size": 3},
        "devset": {"sha256": sha_of(DEV), "size": 2},
        "host": host(),
    }
    assert m["optimization"] == {"optimizer": "GEPA", "trainset_size": 3}
    # The file and the same examples as a list of dspy.Example hash alike.
    examples = [dspy.Example(**row).with_inputs("question") for row in train]
    assert dataset_digest(examples, "trainset").sha256 == sha_of(train)


@pytest.mark.parametrize(
    ("content", "extra", "match"),
    [
        ('{"question": "q1"}\n{"question": \n', [], "train.jsonl:2: not JSON"),
        ('["q1"]\n', [], "train.jsonl:1: expected a JSON object"),
        ("\n\n", [], "holds no examples"),
        ('{"question": "q1"}\n', ["--trainset-size", "5"], "trainset size 5 disagrees with the trainset given (1"),
    ],
)
def test_bad_trainset_file(
    content: str, extra: list[str], match: str, tmp_path: Path, registry_path: Path, states: dict[str, Path]
) -> None:
    (tmp_path / "train.jsonl").write_text(content)
    before = ref_snapshot(registry_path)
    args = [*publish_args(EXAMPLE_SPEC, states["v1.0"], "v1.0"), "--registry", str(registry_path)]
    result = runner.invoke(app, [*args, "--trainset", str(tmp_path / "train.jsonl"), *extra], catch_exceptions=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert match in lines[0] and "Traceback" not in result.output
    assert ref_snapshot(registry_path) == before


@pytest.fixture
def two_versions(registry_path: Path, states: dict[str, Path], tmp_path: Path) -> Path:
    rows_a = [{"question": f"q{i}", "answer": "a"} for i in range(3)]
    rows_b = [{"question": f"q{i}", "answer": "a"} for i in range(4)]
    with Registry.open(registry_path) as reg:
        for version, rows, demos in (("v1.0", rows_a, 4), ("v1.1", rows_b, 8)):
            optimizer = dspy.BootstrapFewShot(metric=None, max_bootstrapped_demos=demos)
            publish_example(reg, states[version], version, optimizer=optimizer, trainset=dataset_digest(rows, "t"))
    return registry_path


def test_show_displays_lineage(two_versions: Path) -> None:
    data = json.loads(ok("show", "v1.0", "--registry", str(two_versions), "--json"))
    lineage = data["manifest"]["lineage"]
    assert lineage["trainset"] == {
        "sha256": sha_of([{"question": f"q{i}", "answer": "a"} for i in range(3)]),
        "size": 3,
    }
    assert lineage["devset"] is None and lineage["host"] == host()
    assert lineage["optimizer"]["class"] == "BootstrapFewShot"
    assert lineage["optimizer"]["args"]["max_bootstrapped_demos"] == 4
    assert lineage["code"]["commit"] == git(ROOT, "rev-parse", "HEAD").strip()  # examples/ is in this checkout
    text = ok("show", "v1.0", "--registry", str(two_versions))
    digest = lineage["trainset"]["sha256"][:12]
    assert f"3 examples (sha256 {digest})" in text
    assert "max_bootstrapped_demos=4" in text and "optimizer class" in text
    assert f"python {platform.python_version()}" in text


def test_diff_displays_lineage_deltas(two_versions: Path) -> None:
    data = json.loads(ok("diff", "v1.0", "v1.1", "--registry", str(two_versions), "--format", "json"))
    meta = data["metadata"]
    assert meta["lineage.trainset"]["before"]["size"] == 3 and meta["lineage.trainset"]["after"]["size"] == 4
    assert meta["lineage.optimizer.args.max_bootstrapped_demos"] == {"before": 4, "after": 8}
    assert "lineage.code" not in meta and "lineage.host.python" not in meta  # unchanged: not shown
    before, after = meta["lineage.trainset"]["before"]["sha256"][:12], meta["lineage.trainset"]["after"]["sha256"][:12]
    for fmt in ("text", "markdown"):
        out = ok("diff", "v1.0", "v1.1", "--registry", str(two_versions), "--format", fmt)
        assert f"3 examples (sha256 {before})" in out and f"4 examples (sha256 {after})" in out, out
        assert "lineage.optimizer.args.max_bootstrapped_demos" in out


def forge(registry: Path, tmp_path: Path, edit: str) -> str:
    """qa/manifest.toml with `edit` appended, committed on main by hand; returns the commit."""
    clone = tmp_path / "forge"
    git(tmp_path, "clone", "-q", str(registry), str(clone))
    path = clone / "qa/manifest.toml"
    manifest = tomlkit.parse(path.read_text())
    manifest.pop("lineage", None)  # the forged table alone
    path.write_text(tomlkit.dumps(manifest) + textwrap.dedent(edit))
    git(clone, "-c", "user.name=M", "-c", "user.email=m@x", "commit", "-qam", "forge")
    git(clone, "push", "-q", "origin", "main")
    return git(clone, "rev-parse", "HEAD").strip()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ('[lineage.trainset]\nsha256 = "{sha}"\nsize = "many"\n', "[lineage.trainset] size has the wrong type"),
        ("[lineage.code]\ncommit = 7\ndirty = false\n", "[lineage.code] commit has the wrong type"),
        ('[lineage.code]\ncommit = "{sha40}"\ndirty = "yes"\n', "[lineage.code] dirty has the wrong type"),
        ('[lineage.optimizer]\nclass = "X"\n[lineage.optimizer.args]\nseed = {{a = 1}}\n', "args] seed has the wrong"),
        ("[lineage.host]\npython = 3.12\n", "[lineage.host] python has the wrong type"),
        (
            '[lineage.optimizer]\nclass = "X"\n[lineage.optimizer.args]\napi_key = "x"\n',
            "lineage.optimizer.args].api_key",
        ),
    ],
)
def test_forged_lineage_fails_verify_naming_the_key(
    edit: str, match: str, registry_path: Path, states: dict[str, Path], tmp_path: Path
) -> None:
    with Registry.open(registry_path) as reg:
        publish_example(reg, states["v1.0"], "v1.0")
    commit = forge(registry_path, tmp_path, edit.format(sha="0" * 64, sha40="a" * 40))
    result = runner.invoke(app, ["verify", commit, "--registry", str(registry_path)], catch_exceptions=False)
    assert result.exit_code == 1 and match in result.output, result.output
    assert "Traceback" not in result.output
