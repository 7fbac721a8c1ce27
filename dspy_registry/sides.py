"""What a side of `dspyreg diff` is: a registry ref or a saved state file, each turned into a ProgramView.

diff.py stays pure (two views in, a Diff out); this module reads what a view is made of. A ref side comes from the
files of a published version, handed in by the registry; a file side is read from disk, with its field names and
types from the program's code (`program_spec`, which imports it) or borrowed from the other, registry, side.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidName
from .refs import parse_ref
from .state import mask_credentials, mask_lm_state

if TYPE_CHECKING:
    from .diff import Diff, PredictorView, ProgramView
    from .manifest import Manifest
    from .registry_api import RegistryAPI
    from .rendered import RenderedDiff, SideRendering
    from .results import Records, Resolved


def is_state_path(ref: str) -> bool:
    """A `diff` side that names a saved state (a .json, or a pickle or folder to refuse) rather than a registry ref."""
    if ref.endswith((".json", ".pkl", ".pickle")):
        return True
    try:
        parse_ref(ref)
    except InvalidName:
        return Path(ref).exists()  # e.g. a save_program=True folder: read_state_file explains why it is refused
    return False


def state_view(
    path: Path, program_spec: str | None = None, typed: Mapping[str, PredictorView] | None = None
) -> ProgramView:
    """A saved state file as a diff side; field names and types from `program_spec` (imports it) or `typed`."""
    from .diff import view_from_bundle, view_from_state
    from .state import read_state_file

    state = read_state_file(path)
    if program_spec is not None:
        from .bundle import import_program, program_prompts

        source = import_program(program_spec)
        typed = view_from_bundle(str(path), program_prompts(source.program), {}, {}).predictors
    return view_from_state(str(path), state, typed)


def version_view(
    resolved: Resolved,
    manifest: Manifest,
    prompts: Any,
    state: Any,
    records: Records,
    interface: dict[str, Any] | None,
) -> ProgramView:
    """A published version as a diff side: its prompts and state, with the manifest and the latest quality records
    as metadata."""
    from .diff import view_from_bundle

    return view_from_bundle(
        f"{resolved.program}/{resolved.version}",
        prompts,
        state,
        _manifest_metadata(manifest) | _records_metadata(records),
        manifest.program.entrypoint,
        interface,
        manifest.tokens,
    )


def diff_sides(
    a: str, b: str, ref_view: Callable[[str], ProgramView] | None = None, program_spec: str | None = None
) -> Diff:
    """Diff two sides, each a registry ref (read with `ref_view`) or a saved state file. A file side without
    `program_spec` borrows field names and types from the registry side, so the two compare like two versions."""
    from .diff import diff_views

    refs = {side: ref_view(side) for side in (a, b) if ref_view is not None and not is_state_path(side)}
    typed = next(iter(refs.values())).predictors if refs and program_spec is None else None
    views = [refs[side] if side in refs else state_view(Path(side), program_spec, typed) for side in (a, b)]
    return diff_views(*views)


def rendered_side(
    label: str, rendered: bytes | None, example: bytes | None, given: Mapping[str, Any] | None
) -> SideRendering:
    """A published version's messages for `given` (else its own examples/input.json), or why not: a version
    published before rendered.json existed says so instead of failing the whole diff. The recorded run's values for
    later predictors are used when `given` is the input that run was recorded for."""
    from .rendered import RENDERED_JSON, missing_side, parse_rendered, render_side

    if rendered is None:
        return missing_side(label, f"{label} was published without {RENDERED_JSON}; republish to render it")
    doc = parse_rendered(rendered, f"{label}: {RENDERED_JSON}")
    if doc.unsupported:
        return missing_side(label, f"{label}: {doc.unsupported}")
    own = example_values(example)
    values = own if given is None else given
    return render_side(label, doc, values, use_recorded=values == own)


def example_values(example: bytes | None) -> dict[str, Any]:
    """A version's examples/input.json as a dict (empty when missing or not a JSON object)."""
    try:
        values = json.loads(example) if example is not None else {}
    except (ValueError, RecursionError):
        values = {}
    return values if isinstance(values, dict) else {}


def diff_files(a: str, b: str, program_spec: str | None = None) -> Diff:
    from .diff import diff_views

    return diff_views(state_view(Path(a), program_spec), state_view(Path(b), program_spec))


def _manifest_metadata(m: Manifest) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "version": m.program.version,
        "dev_score": m.optimization.dev_score,
        "optimizer": m.optimization.optimizer,
        "trainset_size": m.optimization.trainset_size,
    }
    meta |= {f"metrics.{k}": v for k, v in m.optimization.metrics.items()}
    meta |= {f"runtime.{k}": v for k, v in m.runtime.items()}
    meta |= {f"saved_with.{k}": v for k, v in m.saved_with.items()}
    meta |= {f"lm.{k}": v for k, v in mask_lm_state(m.lm).items()}  # a forged [lm] never prints its secrets
    # Nor forged optimizer arguments theirs. The host's versions that [runtime] holds too are compared there.
    host = {f"lineage.host.{k}" for k, v in m.lineage.host.items() if m.runtime.get(k) == v}
    meta |= mask_credentials({k: v for k, v in m.lineage.flat().items() if k not in host})
    return {k: v for k, v in meta.items() if v is not None}


def _records_metadata(records: Records) -> dict[str, Any]:
    """The latest evaluation and benchmark, as diff metadata beside the publish-time dev_score."""
    meta: dict[str, Any] = {}
    if records.latest_evaluation:
        meta["eval.score"] = records.latest_evaluation.score
        meta["eval.metric"] = records.latest_evaluation.metric
        meta["eval.leakage"] = records.latest_evaluation.leakage  # dev examples found among the demos
    if bench := records.latest_benchmark:
        meta |= {
            "bench.p50_ms": bench.p50_ms,
            "bench.p95_ms": bench.p95_ms,
            "bench.tokens_per_query": bench.tokens_per_query,
            "bench.cost_per_query": bench.cost_per_query,
        }
    return {k: v for k, v in meta.items() if v is not None}


def rendered_versions(
    reg: RegistryAPI, a: str, b: str, name: str | None, given: Mapping[str, Any] | None
) -> RenderedDiff:
    """`diff --rendered`: for `given` (else B's recorded example input: what A and B would each send for one input),
    the messages each predictor's adapter sends under `a` and under `b`, diffed message by message."""
    from .rendered import RENDERED_JSON, rendered_diff

    for side in (a, b):
        if is_state_path(side):
            raise InvalidName(f"{side}: diff --rendered compares two published versions, not a state file")
    resolved = [reg.resolve(a, name), reg.resolve(b, name)]
    examples = [reg.store.read_blob(r.commit, f"{r.program}/examples/input.json") for r in resolved]
    source = "the given input" if given is not None else f"{resolved[1].version}'s examples/input.json"
    values = given if given is not None else example_values(examples[1])
    sides = [
        rendered_side(
            f"{r.program}/{r.version}", reg.store.read_blob(r.commit, f"{r.program}/{RENDERED_JSON}"), ex, values
        )
        for r, ex in zip(resolved, examples, strict=True)
    ]
    return rendered_diff(sides[0], sides[1], source)
