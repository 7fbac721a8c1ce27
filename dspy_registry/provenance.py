"""What publish records in [lineage] (lineage.py): dataset digests, the optimizer's plain arguments, the git commit of
the program's code, the host's versions.

Datasets are hashed as the sha256 of one canonical JSON text: the list of examples in order, each an object with its
keys sorted (`json.dumps(rows, sort_keys=True, ensure_ascii=False, separators=(",", ":"))`, UTF-8), so a list of
dspy.Example and the JSON lines file it came from hash alike. The program's code is looked up with the user's own
git (not gitstore.py, which owns registries): a short timeout, and nothing recorded outside a work tree. Never
imports dspy.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import RegistryError
from .lineage import CodeLineage, DatasetDigest, OptimizerLineage

if TYPE_CHECKING:
    from .state import Finding

GIT_TIMEOUT = 5.0
_SCALARS = (str, int, float, bool)


class BadDataset(RegistryError):
    """A trainset or devset that cannot be hashed: not examples, or a value with no JSON form."""


def dataset_digest(examples: Iterable[Any], what: str) -> DatasetDigest:
    """The digest of a list of dspy.Example or dicts (`what`, e.g. "trainset", names it in errors)."""
    if isinstance(examples, (str, bytes, Mapping)):
        raise BadDataset(f"{what} must be a list of dspy.Example or dicts, got {type(examples).__name__}")
    rows = []
    for number, example in enumerate(examples):
        row = example.toDict() if hasattr(example, "toDict") else example  # dspy.Example, without importing dspy
        if not isinstance(row, Mapping):
            raise BadDataset(f"{what}[{number}] is a {type(example).__name__}, not a dspy.Example or a dict")
        rows.append(dict(row))
    try:
        text = json.dumps(rows, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_json_form)
    except (TypeError, ValueError) as err:
        raise BadDataset(f"{what} cannot be hashed: {err}") from None
    return DatasetDigest(hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(), len(rows))


def _json_form(value: Any) -> Any:
    """Pydantic values (dspy.Image, dspy.History...) by their JSON dump; anything else has no stable form."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"a {type(value).__name__} value has no JSON form")


def dataset_file_digest(path: Path, option: str) -> DatasetDigest:
    """A JSON lines file of examples (one object a line), hashed as the same examples given as a list."""
    from .quality import BadData, read_jsonl

    try:
        rows = read_jsonl(path, inputs=[], required=[])
    except BadData as err:
        raise BadDataset(f"{option}: {err}") from None
    return dataset_digest([row for _, row in rows.lines], option)


def checked_trainset_size(trainset: DatasetDigest | None, trainset_size: int | None) -> int | None:
    """[optimization] trainset_size: a given trainset sets it; a different count given beside it is refused."""
    if trainset is None:
        return trainset_size
    if trainset_size is not None and trainset_size != trainset.size:
        raise BadDataset(f"trainset size {trainset_size} disagrees with the trainset given ({trainset.size} examples)")
    return trainset.size


def optimizer_lineage(optimizer: Any) -> tuple[str | None, OptimizerLineage | None, list[str]]:
    """[optimization] optimizer, and for an optimizer object its [lineage.optimizer] with warnings for what was
    dropped as a secret (named by key, never by value). A string is a name only, as before."""
    if optimizer is None or isinstance(optimizer, str):
        return optimizer, None, []
    name = type(optimizer).__name__
    warnings: list[str] = []
    args: dict[str, Any] = {}
    for key, value in _constructor_values(optimizer).items():
        value = _plain(value)
        if value is None:
            continue  # a metric, a dict, an object: not recorded (a metric's code never is)
        if args_findings({key: value}):
            warnings.append(f"removed {key!r} from the optimizer's arguments in [lineage]: it may hold a credential")
            continue
        args[key] = value
    return name, OptimizerLineage(name, args), warnings


def args_findings(args: Mapping[str, Any]) -> list[Finding]:
    """Optimizer arguments that may hold a credential: named like one (`api_key`), or text shaped like one
    (`sk-...`). Publish drops them; verify reports them in a manifest written by hand."""
    from .state import Finding, credential_kind, is_credential_name

    found = []
    for key, value in args.items():
        texts = [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
        kinds = [kind for kind in map(credential_kind, texts) if kind]
        if is_credential_name(key):
            found.append(Finding(f"[lineage.optimizer.args].{key}", "a credential-named key"))
        elif kinds:
            found.append(Finding(f"[lineage.optimizer.args].{key}", f"a value that looks like {kinds[0]}"))
    return found


def _constructor_values(optimizer: Any) -> dict[str, Any]:
    """The optimizer's attributes named like its constructor's parameters (the arguments it keeps), or, for a class
    whose parameters cannot be read, its public attributes."""
    found = vars(optimizer) if hasattr(optimizer, "__dict__") else {}
    attributes = {k: v for k, v in found.items() if not k.startswith("_")}
    try:
        parameters = inspect.signature(type(optimizer).__init__).parameters.values()
    except (TypeError, ValueError):
        return attributes
    named = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]
    return {k: v for k, v in attributes.items() if k in named} if named else attributes


def _plain(value: Any) -> Any:
    """`value` as TOML can hold it (None when it cannot): a scalar, a list of scalars, or an LM as its model name."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, _SCALARS) for v in value):
        return list(value)
    model = getattr(value, "model", None)
    if isinstance(model, str) and hasattr(value, "kwargs"):  # a dspy.LM: its model name, never its settings or key
        return model
    return None


def code_lineage(path: Path | None) -> CodeLineage | None:
    """The HEAD commit of the git work tree holding `path` (a file or a package folder) and whether `path` differs
    from it (changed or untracked); None outside a work tree, or when git is missing or slow."""
    if path is None:
        return None
    folder = path if path.is_dir() else path.parent
    # No optional locks: reading status must not rewrite the user's index.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--verify", "-q", "HEAD"],
            capture_output=True, text=True, timeout=GIT_TIMEOUT, env=env, check=False,
        )  # fmt: skip
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--ignored", "--", str(path)],
            capture_output=True, text=True, timeout=GIT_TIMEOUT, env=env, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if status.returncode != 0:
        return None
    return CodeLineage(head.stdout.strip(), bool(status.stdout.strip()))


def host_versions() -> dict[str, str]:
    """The publishing host's Python, DSPy and LiteLLM (those installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("dspy", "litellm"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found
