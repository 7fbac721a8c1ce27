"""dspyreg: a git-backed version and artifact store for optimized DSPy programs.

import dspy_registry
dspy_registry.publish(program, name="qa", version="v1.1", optimizer="MIPROv2", dev_score=0.67)
program = dspy_registry.load("qa", "prod")
"""

from __future__ import annotations

from .errors import ConflictError, RegistryError
from .version import __version__ as __version__

TYPE_CHECKING = False  # not typing's: importing typing here would delay the CLI's Ctrl-C handler (entry.py)
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path
    from typing import Any

    import dspy

    from .registry import JournalEntry, MoveResult, PublishResult, Registry, VersionDetail, VersionInfo

_LAZY = ("JournalEntry", "MoveResult", "PublishResult", "Registry", "VersionDetail", "VersionInfo")


def __getattr__(name: str) -> Any:
    # The registry (git, TOML) is imported on first use: `import dspy_registry` stays instant, and the `dspyreg`
    # command can take Ctrl-C before anything heavy loads (entry.py).
    if name in _LAZY:
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ConflictError",
    "JournalEntry",
    "MoveResult",
    "PublishResult",
    "Registry",
    "RegistryError",
    "VersionDetail",
    "VersionInfo",
    "load",
    "publish",
]


def publish(
    program: dspy.Module,
    *,
    name: str,
    version: str,
    registry: str | Path | None = None,
    state: Mapping[str, Any] | None = None,
    optimizer: Any = None,
    trainset_size: int | None = None,
    dev_score: float | None = None,
    notes: str = "",
    lm: Any = None,
    metrics: Mapping[str, float] | None = None,
    record_example: bool = False,
    sign: bool | None = None,
    allow_unrendered_demos: bool = False,
    trainset: Iterable[Any] | None = None,
    devset: Iterable[Any] | None = None,
) -> PublishResult:
    """Publish a live (optimized) program as `name` `version`; its class's source file becomes the bundle's code/
    (a class defined in a notebook cell or the running script is captured with what it uses there, notebook.py).

    `state` defaults to the program's own state (what `program.save("x.json")` writes); `lm` (a dspy.LM or a model
    name) defaults to the program's or dspy's configured LM, recorded without keys. With `record_example`, the program
    runs once on its example input with that LM (a dspy.LM; a model name, made with the DSPYREG_LM_* settings as
    `dspyreg publish --lm` makes it; or dspy's configured one), and examples/output.json records what it answered.
    `sign` signs the version tag with git's user.signingkey (SSH keys; default: registry.toml's `[signing] sign`, or
    git's tag.gpgSign). Demos that DSPy would not render (their keys do not match the signature's fields) are
    refused, unless `allow_unrendered_demos` publishes them with a warning.

    Lineage (the manifest's [lineage]): `trainset` and `devset` (lists of dspy.Example or dicts) are recorded by
    content hash and size (the trainset's size is `trainset_size`); `optimizer` may be the optimizer object itself
    (e.g. a dspy.BootstrapFewShot), whose class and plain constructor arguments are recorded, secrets, metric and
    LMs left out (an LM by its model name). The program's git commit and the host's versions are recorded as well.
    """
    from .bundle import current_state
    from .provenance import dataset_digest
    from .publishing import publish_inputs
    from .registry import Registry

    trainset_digest = dataset_digest(trainset, "trainset") if trainset is not None else None
    devset_digest = dataset_digest(devset, "devset") if devset is not None else None
    no_lm = "record_example needs an LM: pass lm=dspy.LM(...) or dspy.configure(lm=...) first"
    inputs = publish_inputs(program, lm=lm, record_example=record_example, no_lm=no_lm)
    with Registry.open(registry) as reg:
        return reg.publish(
            inputs.source,
            dict(state) if state is not None else current_state(program),
            name=name,
            version=version,
            optimizer=optimizer,
            trainset_size=trainset_size,
            dev_score=dev_score,
            notes=notes,
            lm=inputs.lm,
            metrics=metrics,
            record_with=inputs.recorder,
            sign=sign,
            allow_unrendered_demos=allow_unrendered_demos,
            trainset=trainset_digest,
            devset=devset_digest,
        )


def load(
    name: str,
    ref: str = "prod",
    *,
    registry: str | Path | None = None,
    require_signed: bool = False,
    ttl: float = 60,
) -> dspy.Module:
    """The program `name` at `ref` (a version or an environment), rebuilt from JSON state: ready to call.
    `require_signed` refuses it unless its version tag (and environment tag) carry a signature by a key that
    registry.toml's [signing] allows for it.

    The ref is resolved at most once per `ttl` seconds in a process (0: every time); each call returns its own deep
    copy of the program. When a remote registry cannot be reached, the version last verified for the ref on this
    machine is used, with a RegistryUnreachableWarning naming it (client_cache.py, last_good.py)."""
    from .client_cache import load as cached_load

    return cached_load(name, ref, registry=registry, ttl=ttl, require_signed=require_signed)
