"""What a version becomes where it runs: its deployment bundle (export, and the cached copy that load, serve, eval
and bench use), the program built from it, and the DSPy drift check before it runs.

Functions of a Registry (registry.py is the facade that names them); export.py writes the files, runtime/ runs them.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import RegistryError
from .hints import cache_dir

if TYPE_CHECKING:
    import dspy

    from .export import ExportResult
    from .k8s import K8sOptions
    from .registry_api import RegistryAPI
    from .results import Resolved

BUNDLE_LAYOUT = 3  # bump when export writes different files, so caches of older layouts are not reused


def export(
    reg: RegistryAPI, resolved: Resolved, dest: Path, *, force: bool = False, k8s: K8sOptions | None = None
) -> ExportResult:
    """Write the deployment bundle of `resolved` to `dest` (see export.write_export): into a new or empty folder,
    or with `force` into a used one, replacing only the files the bundle owns. With `k8s`, also the Kubernetes
    manifests of replicas that follow an environment (see k8s.py)."""
    from .export import write_export

    files = deployment(reg, resolved)
    if k8s is not None:
        from .k8s import kubernetes_files

        files.update(kubernetes_files(files, k8s))
    return write_export(dest, files, force=force)


def deployment(reg: RegistryAPI, resolved: Resolved) -> dict[str, bytes]:
    """Every file of the deployment bundle: the published ones, then what runs them (see export.py), and the
    typed gRPC interface (see proto.py)."""
    from .export import bundle_deployment

    files = {e.path: reg.store.blob(e.sha) for e in reg.bundle(resolved)}
    where = f"{resolved.program} {resolved.version}"
    return bundle_deployment(files, resolved.commit, reg.records(resolved), reg.proto(resolved), where=where)


def materialize(reg: RegistryAPI, resolved: Resolved) -> Path:
    """The deployment bundle of `resolved` in the cache (one folder per commit and program, written once)."""
    from .version import __version__

    dest = cache_dir() / "bundles" / f"{__version__}-{BUNDLE_LAYOUT}" / resolved.commit / resolved.program
    reg.bundle(resolved)  # a forged tree is refused even when a folder for it is cached already
    if not (dest / "config.json").is_file():
        try:
            export(reg, resolved, dest, force=True)
        except OSError:  # another process wrote it first
            if not (dest / "config.json").is_file():
                raise
        except RegistryError as err:
            raise RegistryError(f"{err} (the bundle cache: set DSPYREG_CACHE to a folder you can write)") from None
    return dest


def build(reg: RegistryAPI, resolved: Resolved) -> dspy.Module:
    """The program of `resolved` (checked by the caller), from its bundled code and JSON state, ready to call."""
    from .runtime.inference import load_program

    if (why := reg.yanked(resolved)) is not None:
        warnings.warn(f"{resolved.program} {resolved.version} is yanked: {why}", stacklevel=3)
    folder = materialize(reg, resolved)
    check_drift(reg, folder, resolved)
    entrypoint = json.loads((folder / "config.json").read_text())["pipeline"]["entrypoint"]
    try:
        return load_program(folder, entrypoint, resolved.commit)
    except Exception as err:
        raise RegistryError(
            f"{resolved.program} {resolved.version} does not load: {type(err).__name__}: {err}"
        ) from None


def check_drift(
    reg: RegistryAPI, folder: Path, resolved: Resolved, report: Callable[[str], None] | None = None
) -> None:
    """Raise RuntimeDrift when registry.toml's [runtime] policy refuses the installed DSPy (or LiteLLM) for the
    versions the bundle in `folder` records; else report each minor or major difference once per process
    (default: a DriftWarning through Python's warnings)."""
    import warnings

    from .errors import RuntimeDrift
    from .runtime.drift import DriftRefused, DriftWarning, check, recorded_versions

    def warn(message: str) -> None:
        warnings.warn(message, DriftWarning, stacklevel=5)

    try:
        what = f"{resolved.program} {resolved.version}"
        check(what, recorded_versions(folder), reg.config.runtime, report or warn)
    except DriftRefused as err:
        raise RuntimeDrift(str(err)) from None
