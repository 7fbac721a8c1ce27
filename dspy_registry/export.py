"""The deployment bundle: a version's files plus what runs them anywhere without dspyreg.

`deployment_files` adds to the published files: config.json, requirements.txt, inference.py, drift.py,
server_limits.py, signature.py, calls.py, telemetry.py and api.py (copied verbatim from dspy_registry/runtime),
Dockerfile, docker-compose.yml, .dockerignore, a README deployment guide, and `<program>.proto`, the typed gRPC
interface (see proto.py) that `dspyreg serve --grpc-port` serves. Everything is JSON, TOML, text or Python source:
never pickle.

`replace_owned` puts a bundle into a folder that holds other things too (a `.venv`, an `.env`): the folder's
`.dspyreg-bundle.json` lists the files an export wrote, and only those (and the files the new bundle writes) are
replaced; everything else stays. `write_export` is the one way a bundle reaches a folder: built aside first.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CorruptRecord, RegistryError
from .manifest import Manifest
from .results import Records
from .state import METADATA_KEY, canonical_json, is_predictor_state

RUNTIME_DIR = Path(__file__).parent / "runtime"
RUNTIME_FILES = ("inference.py", "drift.py", "server_limits.py", "signature.py", "calls.py", "telemetry.py", "api.py")
PORT = 8000
API_COMMAND = ["python", "api.py", "--host", "0.0.0.0", "--port", str(PORT)]
HEALTHCHECK = [
    "python",
    "-c",
    f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{PORT}/health', timeout=4)",
]
# The image answers /metrics; numpy only makes DSPy's import 0.2 s faster (see pyproject.toml).
_SERVE_PACKAGES = {"fastapi": "0.110", "uvicorn": "0.29", "prometheus-client": "0.20", "numpy": "1.24"}
OWNED_LIST = ".dspyreg-bundle.json"
# Secrets and local tools that people keep beside a bundle (docs/deployment.md says to) never reach an image; the
# Dockerfile also copies the bundle's files by name, so this is the second line.
DOCKERIGNORE = """# Written by dspyreg export: only the bundle's files belong in an image, never secrets or local tools.
.env*
**/.env*
.venv/
**/.venv/
.git/
**/.git/
__pycache__/
**/__pycache__/
*.pyc
**/*.pyc
"""


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the bundle's files, those it replaced, and those of the previous export it removed."""

    path: Path
    files: tuple[str, ...]
    replaced: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def deployment_files(
    manifest: Manifest,
    commit: str,
    state: Mapping[str, Any],
    interface: Mapping[str, Any],
    example: Any,
    records: Records | None = None,
    proto: str | None = None,
    published: Iterable[str] = (),
) -> dict[str, bytes]:
    """The files that deploy a version; `published` names the version's own files, which the Dockerfile copies."""
    files = {
        "config.json": canonical_json(config(manifest, commit, state, records)),
        "requirements.txt": requirements(manifest).encode(),
        "docker-compose.yml": compose(manifest).encode(),
        ".dockerignore": DOCKERIGNORE.encode(),
        "README.md": readme(manifest, interface, example).encode(),
    }
    for runtime_file in RUNTIME_FILES:
        files[runtime_file] = (RUNTIME_DIR / runtime_file).read_bytes()
    if proto is not None:
        files[f"{manifest.program.name}.proto"] = proto.encode()
    files["Dockerfile"] = dockerfile(manifest, [*published, *files]).encode()
    return files


def bundle_deployment(
    published: Mapping[str, bytes], commit: str, records: Records, proto: str, *, where: str
) -> dict[str, bytes]:
    """Every file of the deployment bundle of version `where` (e.g. `qa v1.1`): its `published` files as read from
    git, then deployment_files."""
    manifest = Manifest.loads(published["manifest.toml"], where=f"{where}: manifest.toml")
    state = bundle_json(published["program.json"], f"{where}: program.json")
    interface = bundle_json(
        published.get("interface.json", b'{"inputs": [], "outputs": []}'), f"{where}: interface.json"
    )
    example = bundle_json(published.get("examples/input.json", b"{}"), f"{where}: examples/input.json")
    deploy = deployment_files(manifest, commit, state, interface, example, records, proto, published=published)
    return {**published, **deploy}


def bundle_json(data: bytes, what: str) -> Any:
    """A JSON file of a published bundle; one that is not JSON (a commit made by hand) is CorruptRecord."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise CorruptRecord(f"{what} is not valid JSON: run `dspyreg verify` to see what else is wrong") from None


def write_export(dest: Path, files: Mapping[str, bytes], *, force: bool = False) -> ExportResult:
    """Write a deployment bundle's `files` to `dest`, built aside first. Into a new or empty folder it is renamed in
    whole; `force` into a used folder replaces only the files the bundle owns (the previous export's list and the new
    bundle's files) and keeps everything else, such as a .venv or an .env."""
    if dest.exists() and not dest.is_dir():
        raise RegistryError(f"{dest} exists and is not a folder: choose a folder to export to")
    used = dest.is_dir() and any(dest.iterdir())
    if used and not force:
        raise RegistryError(
            f"{dest} is not empty: choose an empty folder, or pass --force to replace the files of the bundle "
            "(other files stay)"
        )
    files = {**files, OWNED_LIST: owned_list(files)}
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    except OSError as err:
        raise RegistryError(f"cannot write to {dest}: {err.strerror or err}") from None
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make the bundle private to this user
    try:
        write_inside(tmp, files)
        if used:
            return replace_owned(dest, tmp, files)
        tmp.rename(dest)  # POSIX renames onto an empty folder
        return ExportResult(dest, tuple(sorted(files)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def owned_files(folder: Path) -> set[str]:
    """The files the previous export into `folder` wrote, per its list; a missing or damaged list owns nothing, and a
    listed path that leaves the folder is ignored (the list is a file anyone could have edited)."""
    try:
        listed = json.loads((folder / OWNED_LIST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    paths = listed.get("files") if isinstance(listed, dict) else None
    if not isinstance(paths, list):
        return set()
    root = folder.resolve()
    owned = set()
    for path in paths:
        relative = isinstance(path, str) and path and not Path(path).is_absolute() and ".." not in Path(path).parts
        if relative and (root / path).resolve().is_relative_to(root):
            owned.add(path)
    return owned


def owned_list(files: Iterable[str]) -> bytes:
    return canonical_json({"files": sorted({*files, OWNED_LIST})})


def replace_owned(folder: Path, staged: Path, files: Iterable[str]) -> ExportResult:
    """Move the bundle written in `staged` into `folder`: each of its `files` replaces the file of that name; the
    previous export's files that the new bundle lacks are removed; nothing else in `folder` is touched.

    Every target is checked before anything moves, so a refusal changes nothing."""
    root = folder.resolve()
    new = sorted(files)
    for path in new:
        target = root / path
        if not target.parent.resolve().is_relative_to(root) or (target.is_dir() and not target.is_symlink()):
            raise RegistryError(f"cannot replace {folder / path}: it is a folder or leads outside {folder}")
        for parent in Path(path).parents:
            if parent != Path(".") and (root / parent).exists() and not (root / parent).is_dir():
                raise RegistryError(f"cannot write {folder / path}: {folder / parent} is a file")
    old = owned_files(folder)
    replaced = tuple(p for p in new if os.path.lexists(root / p))
    removed = []
    for path in sorted(old - set(new)):
        target = root / path
        if target.is_symlink() or target.is_file():
            target.unlink()
            removed.append(path)
            _remove_empty_parents(target.parent, root)
    for path in new:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged / path, target)
    return ExportResult(folder, tuple(new), replaced, tuple(removed))


def _remove_empty_parents(folder: Path, root: Path) -> None:
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return  # not empty: it holds something the export did not write
        folder = folder.parent


def write_inside(folder: Path, files: Mapping[str, bytes]) -> None:
    """Write `files` (relative path -> content) under `folder`, refusing any path that resolves outside it.

    Bundle paths are checked when read (GitStore.list_bundle); this is the second line: a name that slipped through,
    or a link planted in the folder, still cannot make a write land anywhere else."""
    root = folder.resolve()
    for path, data in files.items():
        target = (root / path).resolve()
        if target == root or not target.is_relative_to(root):
            raise RegistryError(f"refusing to write {path!r}: it resolves outside {folder}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def config(manifest: Manifest, commit: str, state: Mapping[str, Any], records: Records | None = None) -> dict[str, Any]:
    """config.json, in the shape deployment guides use: pipeline, lm, retriever (if any), performance.

    `performance` takes the latest evaluation and benchmark records, else what was given at publish."""
    lm = {k: manifest.lm[k] for k in ("model", "temperature", "max_tokens") if k in manifest.lm}
    lm["timeout"] = manifest.lm.get("timeout", 30)
    out: dict[str, Any] = {
        "pipeline": {
            "type": "dspy",
            "name": manifest.program.name,
            "version": manifest.program.version,
            "commit": commit,
            "checkpoint": "program.json",
            "entrypoint": manifest.program.entrypoint,
            "interface": "interface.json",
        },
        "lm": lm,
    }
    retrievers = {
        key: value
        for key, value in state.items()
        if key != METADATA_KEY and isinstance(value, dict) and not is_predictor_state(value) and "k" in value
    }
    if retrievers:
        key, value = next(iter(retrievers.items()))
        out["retriever"] = {"type": "dspy.Retrieve", "module": key, "top_k": value["k"]}
    metrics = manifest.optimization.metrics
    evaluation = records.latest_evaluation if records else None
    benchmark = records.latest_benchmark if records else None
    performance = {
        "dev_score": evaluation.score if evaluation else manifest.optimization.dev_score,
        "avg_latency_ms": benchmark.mean_ms if benchmark else metrics.get("avg_latency_ms"),
        "cost_per_query": benchmark.cost_per_query if benchmark else metrics.get("cost_per_query"),
    }
    out["performance"] = {k: v for k, v in performance.items() if v is not None}
    return out


def _installed(package: str) -> str | None:
    # importlib.metadata costs more to import than a read command may spend: only export asks what is installed.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def requirements(manifest: Manifest) -> str:
    lines = [
        f"# Runtime of {manifest.program.name} {manifest.program.version}, exported by dspyreg (not needed to run it).",
        "# dspy is pinned to the version this program was published with; add what the program's code imports.",
        f"dspy=={manifest.runtime['dspy']}" if "dspy" in manifest.runtime else "dspy",
    ]
    for package, minimum in _SERVE_PACKAGES.items():
        installed = _installed(package)
        lines.append(f"{package}=={installed}" if installed else f"{package}>={minimum}")
    return "\n".join(lines) + "\n"


def _python_minor(manifest: Manifest) -> str:
    parts = manifest.runtime.get("python", "3.11").split(".")
    return ".".join(parts[:2])


def dockerfile(manifest: Manifest, paths: Iterable[str] = ()) -> str:
    """The image copies the bundle's files by name (one COPY per folder), never the whole folder: whatever else sits
    beside the bundle (.env, .venv) stays out of the image."""
    by_folder: dict[str, list[str]] = {}
    for path in sorted({*paths} - {"requirements.txt", ".dockerignore"}):
        by_folder.setdefault(Path(path).parent.as_posix(), []).append(path)
    copies = "\n".join(
        f"COPY {json.dumps([*names, './' if folder == '.' else f'{folder}/'])}" for folder, names in by_folder.items()
    )
    return f"""# {manifest.program.name} {manifest.program.version}, exported by dspyreg.
FROM python:{_python_minor(manifest)}-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
{copies}
ENV PYTHONUNBUFFERED=1
EXPOSE {PORT}
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD {json.dumps(HEALTHCHECK)}
CMD {json.dumps(API_COMMAND)}
"""


def compose(manifest: Manifest) -> str:
    name, ver = manifest.program.name, manifest.program.version
    default_model = manifest.lm.get("model", "")
    command = ", ".join(json.dumps(part) for part in API_COMMAND)
    test = ", ".join(json.dumps(part) for part in ["CMD", *HEALTHCHECK])
    return f"""# {name} {ver}, exported by dspyreg. Secrets come from the environment (or an .env file):
#   DSPYREG_LM_API_KEY=... docker compose up --build
services:
  {name}:
    build: .
    image: {name}:{ver}
    command: [{command}]
    ports:
      - "{PORT}:{PORT}"
    environment:
      DSPYREG_LM_MODEL: ${{DSPYREG_LM_MODEL:-{default_model}}}
      DSPYREG_LM_API_BASE: ${{DSPYREG_LM_API_BASE:-}}
      DSPYREG_LM_API_KEY: ${{DSPYREG_LM_API_KEY:-}}
      DSPYREG_API_TOKEN: ${{DSPYREG_API_TOKEN:-}}
      OPENAI_API_KEY: ${{OPENAI_API_KEY:-}}
    healthcheck:
      test: [{test}]
      interval: 30s
      timeout: 5s
      start_period: 30s
      retries: 3
    restart: unless-stopped
"""


def readme(manifest: Manifest, interface: Mapping[str, Any], example: Any) -> str:
    name, ver = manifest.program.name, manifest.program.version
    inputs = "\n".join(
        f"| `{f['name']}` | `{f['type']}` | {f.get('description', '')} |" for f in interface.get("inputs", [])
    )
    outputs = "\n".join(
        f"| `{f['name']}` | `{f['type']}` | {f.get('description', '')} |" for f in interface.get("outputs", [])
    )
    body = json.dumps(example, ensure_ascii=False)
    model = manifest.lm.get("model", "openai/gpt-4o-mini")
    return f"""# {name} {ver}: deployment guide

This folder is a self-contained deployment of the DSPy program `{name}` version `{ver}`, exported by dspyreg.
It needs Python and `pip install -r requirements.txt`; it does not need dspyreg. The program is rebuilt from
`code/` and its optimized state `program.json` (JSON, never pickle).

| file | what |
| --- | --- |
| `program.json` | the DSPy state: instructions and demos per predictor |
| `prompts.json`, `prompts/*.md` | the prompts, per predictor, as DSPy's ChatAdapter sends them |
| `code/` | the program's source; `config.json` names its entrypoint |
| `manifest.toml` | version, optimizer, scores, runtime versions, sha256 of every published file |
| `interface.json` | the program's inputs and outputs, with types |
| `field-numbers.json` | the gRPC field numbers, fixed when the version was published |
| `config.json` | pipeline, LM and performance settings |
| `inference.py` | `PipelineServer(".").predict(**inputs)` |
| `drift.py` | the installed DSPy and LiteLLM against the versions this bundle records (a warning log line) |
| `api.py`, `server_limits.py` | the HTTP API (FastAPI) and the limits it enforces (strict JSON, batch size, timeouts) |
| `calls.py`, `signature.py` | one call (bearer check, validation, run, access log) and the program's field types |
| `telemetry.py` | `/metrics` (with `pip install prometheus-client`) and OpenTelemetry spans when OTEL_* is set |
| `{name}.proto` | the typed gRPC interface, served by `dspyreg serve --grpc-port`: generate clients from it |
| `examples/input.json`, `examples/output.json` | an input, and the output it gave (see its `source`) |

## Run it locally

```sh
python -m venv .venv && .venv/bin/pip install -r requirements.txt
export DSPYREG_LM_MODEL={model} DSPYREG_LM_API_KEY=...    # or the provider's usual key variable
.venv/bin/python api.py --port {PORT}
```

```sh
curl -s -X POST http://127.0.0.1:{PORT}/predict -H 'Content-Type: application/json' -d @examples/input.json
# e.g. {body}
curl -s http://127.0.0.1:{PORT}/health
curl -s http://127.0.0.1:{PORT}/version
```

In Python: `from inference import PipelineServer; PipelineServer(".").predict(**inputs)`.

Inputs (the body of `POST /predict`):

| name | type | description |
| --- | --- | --- |
{inputs}

Outputs (with `program`, `version` and `usage` beside them):

| name | type | description |
| --- | --- | --- |
{outputs}

## gRPC

`{name}.proto` is this version's typed gRPC interface. `api.py` serves REST only; `dspyreg serve --grpc-port` serves
both from the registry. Generate a client in any language from the .proto, e.g. for Python:
`python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. {name}.proto`.

## Variables

| variable | meaning |
| --- | --- |
| `DSPYREG_LM_MODEL` | the LM, e.g. `{model}` (default: config.json's `lm.model`) |
| `DSPYREG_LM_API_BASE` | an OpenAI-compatible endpoint, e.g. a local server |
| `DSPYREG_LM_API_KEY` | the key; the provider's usual variable (e.g. `OPENAI_API_KEY`) works too; never logged |
| `DSPYREG_LM_NUM_RETRIES` | LM retries per call (default 3) |
| `DSPYREG_API_TOKEN` | when set, requests need `Authorization: Bearer <token>` (`/health` stays open) |
| `DSPYREG_MAX_BATCH` | inputs per `POST /predict/batch` (default 64; more get 413); or `api.py --max-batch` |
| `DSPYREG_MAX_CONNECTIONS` | open connections per process (default 512; more get 503); or `--max-connections` |
| `DSPYREG_HEADER_TIMEOUT` | seconds for request headers to arrive (default 10); or `--header-timeout` |
| `DSPYREG_BODY_TIMEOUT` | seconds for a request body to arrive (default 30; slower get 408); or `--body-timeout` |

DSPy's response cache is off: every request reaches the LM. Errors: 422 for a body that does not fit the inputs
(or is not strict JSON: no NaN or Infinity, no numbers out of range, no nesting past 64 levels, valid Unicode only),
502 with a JSON error when the LM fails or answers something unparseable.

## Docker

```sh
docker compose up --build            # secrets from your environment, healthcheck on /health
```

## Roll back

This folder is one immutable version. To roll back, point prod at the previous version and deploy what it points to:

```sh
dspyreg rollback                      # prod -> the previous prod version, journaled
dspyreg export prod ./deploy --force  # the bundle prod now points to
docker compose up --build -d          # from ./deploy
```

Or run `dspyreg serve` (which follows prod and swaps versions by itself).
"""
