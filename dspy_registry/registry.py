"""The facade: every command on one registry as one method (init, publish, list, show, log, diff, promote,
rollback, unassign, yank, approve, eval, bench, verify, export, load).

Every write builds objects first and then moves all the refs it touches in one transaction with expected old
values (see gitstore.py), so a command either happens whole or not at all. Reads look refs up by name, never by
scanning every tag, except `list`, whose job is to list them. This module resolves names and refs and reads
versions; the concerns live below it: opening.py (where a store comes from), listing.py (what `list` reads),
publishing.py (what a new version may be, and writing it), moves.py (promote, gates, the one environment move),
lifecycle.py (yank, approvals), journal.py (the journal format), sides.py (diff sides), quality.py (eval, bench),
checks.py, verify.py and trust.py (verification), delivery.py (bundles, loading, drift).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import delivery, journal, lifecycle, listing, moves
from .errors import (
    InvalidName,
    UnknownRef,
)
from .gitstore import GitStore, utc_now
from .gittree import BundleEntry
from .hints import cache_dir
from .manifest import Manifest, RegistryConfig
from .opening import init_store, open_store
from .refs import (
    MAIN_REF,
    PROGRAM_RE,
    ROLLBACK_ENV,
    SHA_RE,
    UNSET,
    RefSpec,
    check_environment,
    check_program,
    check_text,
    is_version,
    parse_ref,
    split_tag_ref,
    tag_ref,
    version_key,
)
from .results import (
    Approval,
    BenchRecord,
    EvalRecord,
    JournalEntry,
    MoveResult,
    PublishResult,
    Records,
    Resolved,
    VersionDetail,
    VersionInfo,
)
from .sides import diff_files, diff_sides, is_state_path, rendered_versions, state_view, version_view

if TYPE_CHECKING:
    import dspy

    from .bundle import ProgramSource
    from .checks import Finding
    from .diff import Diff, ProgramView
    from .example_compare import ExampleComparison
    from .export import ExportResult
    from .git_setup import GitSetupResult
    from .k8s import K8sOptions
    from .lineage import DatasetDigest
    from .rendered import RenderedDiff
    from .verify import Problem

# Names that moved below, kept importable from here (`from dspy_registry.registry import Resolved, ...`).
__all__ = ["JournalEntry", "MoveResult", "PublishResult", "Registry", "Resolved", "VersionDetail", "VersionInfo"]
__all__ += ["Records", "cache_dir", "default_registry", "diff_files", "is_state_path", "state_view"]


def default_registry() -> str:
    from .hints import default_location

    return default_location()


class Registry:
    def __init__(self, store: GitStore, location: str) -> None:
        self.store = store
        self.location = location
        self._config: RegistryConfig | None = None
        self.published_tags: tuple[tuple[str, str | None], list[str]] | None = None

    @classmethod
    def open(cls, location: str | Path | None = None) -> Registry:
        """A registry by path, by git URL (through its cache clone), or by a local clone of a remote one.

        A remote registry's refs are brought up to date first, moved tags included, so nothing acts on a stale prod.
        """
        where = str(location or default_registry())
        store, config = open_store(where)
        registry = cls(store, where)
        registry._config = config
        return registry

    @classmethod
    def init(cls, location: str | Path | None = None, *, bare: bool = True) -> Registry:
        """A new registry from registry-template/: in a new or empty folder, an empty repository, or an empty remote."""
        where = str(location or default_registry())
        return cls(init_store(where, bare=bare), where)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def config(self) -> RegistryConfig:
        if self._config is None:
            text = self.store.read_blob(MAIN_REF, "registry.toml")
            self._config = RegistryConfig.loads(text or b"")
        return self._config

    @property
    def production(self) -> str:
        return self.config.environments[-1]

    # -- names -------------------------------------------------------------------------------------------------------
    def programs(self) -> list[str]:
        return sorted(
            n for n, e in self.store.list_tree(MAIN_REF).items() if e.type == "tree" and PROGRAM_RE.fullmatch(n)
        )

    def program_of(self, program: str | None) -> str:
        if program is not None:
            return check_program(program)
        programs = self.programs()
        if len(programs) == 1:
            return programs[0]
        if not programs:
            raise UnknownRef(f"no program is published in {self.location} yet: publish one first")
        raise InvalidName(
            f"registry holds several programs ({', '.join(programs)}): say which with --name or program/ref"
        )

    def _known(self, program: str) -> str:
        check_program(program)
        if program not in self.programs():
            raise UnknownRef(f"{self.location} holds no program {program!r}: see `dspyreg list`")
        return program

    def check_env(self, env: str, *, allow_rollback: bool = False) -> str:
        check_environment(env)
        known = self.config.environments + ((ROLLBACK_ENV,) if allow_rollback else ())
        if env not in known:
            raise UnknownRef(f"unknown environment {env!r}: this registry's environments are {', '.join(known)}")
        return env

    # -- resolving ---------------------------------------------------------------------------------------------------
    def resolve(self, ref: str, name: str | None = None) -> Resolved:
        spec = parse_ref(ref, name)
        program = self.program_of(spec.program)
        if spec.version is not None:
            commit = self.store.peel_to_commit(tag_ref(program, spec.version))
            if commit is not None:
                return Resolved(program, spec.version, commit)
            leaf = ref.rpartition("/")[2]
            if not SHA_RE.fullmatch(leaf):  # an all-digit short sha also reads as a version
                raise UnknownRef(f"{program} {spec.version} is not published: see `dspyreg list {program}`")
            spec = RefSpec(program, sha=leaf)
        if spec.environment is not None:
            env = self.check_env(spec.environment, allow_rollback=True)
            state = journal.env_state(self.store, program, env, None)
            commit = self.store.peel_to_commit(tag_ref(program, env))
            if commit is None:
                hint = f"it names the previous {self.production} once {self.production} has moved twice"
                raise UnknownRef(
                    f"{program}/{env} is {UNSET}: " + (hint if env == ROLLBACK_ENV else "promote a version to it first")
                )
            # A tag moved by hand carries no dspyreg record: its commit's manifest says which version it holds,
            # and verification says what is wrong with it.
            version = state.version or self._manifest_version(commit, program, f"{program}/{env}")
            return Resolved(program, version, commit, env)
        assert spec.sha is not None
        commit = self.store.peel_to_commit(spec.sha)
        if commit is None:
            raise UnknownRef(f"{spec.sha} is not a commit of this registry")
        return Resolved(program, self._manifest_version(commit, program, spec.sha), commit)

    def _manifest_version(self, commit: str, program: str, what: str) -> str:
        manifest = self.store.read_blob(commit, f"{program}/manifest.toml")
        if manifest is None:
            raise UnknownRef(f"{what} is not a commit of this registry that holds program {program}")
        return Manifest.loads(manifest, where=f"{what}:{program}/manifest.toml").program.version

    def manifest(self, resolved: Resolved) -> Manifest:
        return Manifest.loads(self._file(resolved, "manifest.toml"), where=f"{resolved.program}/manifest.toml")

    def _file(self, resolved: Resolved, path: str) -> bytes:
        data = self.store.read_blob(resolved.commit, f"{resolved.program}/{path}")
        if data is None:
            raise UnknownRef(f"{resolved.program} {resolved.version} has no {path}")
        return data

    def _json_file(self, resolved: Resolved, path: str) -> Any:
        from .export import bundle_json

        return bundle_json(self._file(resolved, path), f"{resolved.program} {resolved.version}: {path}")

    def environments_of(self, program: str) -> dict[str, str]:
        """env -> version for every environment of `program` that is set (rollback included)."""
        out = {}
        for env in (*self.config.environments, ROLLBACK_ENV):
            version = journal.env_state(self.store, program, env, None).version
            if version is not None:
                out[env] = version
        return out

    # -- reading -----------------------------------------------------------------------------------------------------
    def versions(self, program: str | None = None, *, scored: int | None = None) -> list[VersionInfo]:
        """Every published version (of one program, or all), oldest first by semantic version. With `scored`, only
        the newest `scored` versions of each program (beside the yanked ones) and those an environment points at
        carry what their tags record and their evaluation score (the rest hold name, version, commit and
        environments): the rest of the history's tag messages and records are not read."""
        pattern = f"refs/tags/{self._known(program)}/" if program is not None else "refs/tags/"
        return listing.versions(self.store, (*self.config.environments, ROLLBACK_ENV), pattern, program, scored)

    def show(self, ref: str, name: str | None = None) -> VersionDetail:
        resolved = self.resolve(ref, name)
        manifest = self.manifest(resolved)
        envs = self.environments_of(resolved.program)
        opt = manifest.optimization
        info = VersionInfo(
            name=resolved.program,
            version=resolved.version,
            commit=self.store.peel_to_commit(tag_ref(resolved.program, resolved.version)) or resolved.commit,
            created=manifest.program.created,
            environments=tuple(e for e, v in envs.items() if v == resolved.version),
            dev_score=opt.dev_score,
            optimizer=opt.optimizer,
            trainset_size=opt.trainset_size,
            notes=manifest.program.notes,
        )
        records = self.records(resolved)
        yank = lifecycle.yanked(self.store, resolved.program).get(resolved.version)
        info = replace(info, eval_score=records.latest_score, yanked=yank.reason if yank else None)
        return VersionDetail(info, manifest, self._json_file(resolved, "prompts.json"), records)

    def log(
        self, program: str | None = None, env: str | None = None, *, limit: int | None = None
    ) -> list[JournalEntry]:
        """Every environment move, oldest first; optionally of one program and one environment; with `limit`, the
        newest `limit` only (reading no further back in the journal)."""
        if program is not None:
            self._known(program)
        if env is not None:
            self.check_env(env, allow_rollback=True)
        return journal.log(self.store, program, env, limit=limit)

    def view(self, ref: str, name: str | None = None) -> ProgramView:
        """A version as a side of `diff`."""
        resolved = self.resolve(ref, name)
        return version_view(
            resolved,
            self.manifest(resolved),
            self._json_file(resolved, "prompts.json"),
            self._json_file(resolved, "program.json"),
            self.records(resolved),
            self.interface(resolved),
        )

    def interface(self, resolved: Resolved) -> dict[str, Any] | None:
        """interface.json, or None for a version published before it existed (or holding something else)."""
        data = self.store.read_blob(resolved.commit, f"{resolved.program}/interface.json")
        try:
            value = json.loads(data) if data is not None else None
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def git_setup(self) -> GitSetupResult:
        """Plain `git diff`, `git log -p` and `git show` print dspyreg's view of program.json and prompts.json here
        (and in the clone this registry was opened through): see git_setup.py."""
        from .git_setup import set_up

        return set_up(self.store, self.location)

    def diff(self, a: str, b: str, name: str | None = None, program_spec: str | None = None) -> Diff:
        """Diff two sides, each a registry ref or a saved state file. A file side without `program_spec` borrows
        field names and types from the registry side, so the two compare like two versions."""
        return diff_sides(a, b, lambda side: self.view(side, name), program_spec)

    def diff_rendered(
        self, a: str, b: str, name: str | None = None, given: dict[str, Any] | None = None
    ) -> RenderedDiff:
        """The messages each predictor's adapter sends under `a` and under `b` for one input (see
        sides.rendered_versions). Both sides are registry refs; no code is imported."""
        return rendered_versions(self, a, b, name, given)

    def proto(self, resolved: Resolved) -> str:
        """The .proto of `resolved`, from git alone (no version's code is imported): its interface.json numbered by
        the field-numbers.json fixed at its publish, or for a version published before those, by the interfaces of
        every published version up to it (see field_numbers.py)."""
        from .field_numbers import version_proto

        return version_proto(self.store, resolved, lambda: self.version_commits(resolved.program))

    def version_commits(self, program: str) -> list[tuple[str, str]]:
        """(version, commit) of every published version of `program`, oldest first: the versions `versions` lists,
        from the tags alone (no payload, score or yank is read)."""
        rows = self.store.for_each_ref(["%(refname)", "%(*objectname)", "%(objecttype)"], f"refs/tags/{program}/")
        found = []
        for refname, commit, kind in rows:
            parsed = split_tag_ref(refname)
            if parsed is not None and kind == "tag" and parsed[0] == program and is_version(parsed[1]):
                found.append((parsed[1], commit))
        return sorted(found, key=lambda r: version_key(r[0]))

    # -- writing -----------------------------------------------------------------------------------------------------
    def publish(
        self,
        source: ProgramSource,
        state: dict[str, Any],
        *,
        name: str,
        version: str,
        optimizer: Any = None,
        trainset_size: int | None = None,
        dev_score: float | None = None,
        notes: str = "",
        lm: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        origin: str = "state",
        record_with: Any = None,
        sign: bool | None = None,
        allow_unrendered_demos: bool = False,
        trainset: DatasetDigest | None = None,
        devset: DatasetDigest | None = None,
    ) -> PublishResult:
        """`optimizer` is a name, or the optimizer object whose class and plain arguments go to [lineage]."""
        from .bundle import PublishMeta, build_bundle
        from .lineage import Lineage
        from .provenance import checked_trainset_size, code_lineage, host_versions, optimizer_lineage
        from .publishing import check_metadata, field_numbers, interface_warnings, write_version

        version = self.check_new_version(name, version)
        signer = self.signer(sign)
        optimizer, optimizer_record, lineage_warnings = optimizer_lineage(optimizer)
        trainset_size = checked_trainset_size(trainset, trainset_size)
        lineage = Lineage(trainset, devset, optimizer_record, code_lineage(source.path), host_versions())
        check_metadata(dev_score=dev_score, trainset_size=trainset_size, notes=notes, optimizer=optimizer, lm=lm)
        who, now = self.store.identity(), utc_now()
        created = now.isoformat().replace("+00:00", "Z")
        meta = PublishMeta(
            name=name,
            version=version,
            created=created,
            author=f"{who.name} <{who.email}>",
            optimizer=optimizer,
            trainset_size=trainset_size,
            dev_score=dev_score,
            notes=notes,
            lm=lm,
            metrics=metrics,
            record_with=record_with,
            allow_unrendered_demos=allow_unrendered_demos,
            lineage=lineage,
        )
        bundle = build_bundle(source, state, meta, origin=origin, field_numbers=field_numbers(self, name, version))
        interface = interface_warnings(self, name, version, source.entrypoint, bundle.files)
        warnings = (*lineage_warnings, *bundle.warnings, *interface)
        commit = write_version(self.store, meta, bundle.files, who=who, now=now, signer=signer)
        return PublishResult(name, version, commit, tuple(sorted(bundle.files)), warnings)

    def check_new_version(self, name: str, version: str) -> str:
        """The normalized version, if `name` may publish it; raises otherwise (see publishing.check_new_version)."""
        from .publishing import check_new_version

        return check_new_version(self, name, version)

    def promote(
        self,
        source: str,
        to: str | None = None,
        *,
        name: str | None = None,
        reason: str = "",
        force: bool = False,
        sign: bool | None = None,
    ) -> MoveResult:
        """Point `to` (default: the next environment) at `source`'s version, if registry.toml's gates allow it;
        `force` (with a reason) overrides the gates and the journal records the override (see moves.py)."""
        return moves.promote(self, source, to, name=name, reason=reason, force=force, sign=sign)

    def gate_refusals(self, program: str, env: str, candidate: Resolved) -> list[str]:
        """What registry.toml's [gates.<env>] say against moving `env` to `candidate` (empty: the gates allow it)."""
        return moves.gate_refusals(self, program, env, candidate)

    def compare_examples(self, a: str, b: str, name: str | None = None) -> ExampleComparison:
        """`diff --examples`: the two versions' evaluations on one dev set, example by example (records only)."""
        from .example_compare import NotComparable

        result = moves.comparison(self, self.resolve(a, name), self.resolve(b, name))
        if isinstance(result, str):
            raise NotComparable(result)
        return result

    def score(self, resolved: Resolved, records: Records | None = None) -> float | None:
        """What the gates compare: the latest evaluation's score, else the dev score given at publish."""
        score = (records or self.records(resolved)).latest_score
        return score if score is not None else self.manifest(resolved).optimization.dev_score

    def rollback(
        self, env: str | None = None, *, name: str | None = None, reason: str = "", sign: bool | None = None
    ) -> MoveResult:
        program = self.program_of(name)
        check_text("--reason", reason, multiline=True)
        return self._move(program, self.check_env(env or self.production), None, "rollback", reason, sign=sign)

    def unassign(self, env: str, *, name: str | None = None, reason: str = "", sign: bool | None = None) -> MoveResult:
        """Clear `env` (its tag is deleted; the journal keeps what it held, so `rollback` brings it back)."""
        program = self.program_of(name)
        check_text("--reason", reason, multiline=True)
        return self._move(program, self.check_env(env), None, "unassign", reason, sign=sign)

    # -- lifecycle ----------------------------------------------------------------------------------------------------
    def yank(self, ref: str, *, name: str | None = None, reason: str = "", undo: bool = False) -> JournalEntry:
        """Yank a version (`undo`: unyank it): see lifecycle.yank. Journaled."""
        return lifecycle.yank(self, ref, name=name, reason=reason, undo=undo)

    def approve(
        self, ref: str, env: str, *, name: str | None = None, reason: str = "", sign: bool | None = None
    ) -> Approval:
        """Record the configured git identity's approval of a version for `env`: see lifecycle.approve."""
        return lifecycle.approve(self, ref, env, name=name, reason=reason, sign=sign)

    def yanked(self, resolved: Resolved) -> str | None:
        """Why `resolved`'s version is yanked, or None."""
        yank = lifecycle.yanked(self.store, resolved.program).get(resolved.version)
        return yank.reason if yank else None

    def signer(self, sign: bool | None) -> Callable[[bytes], bytes] | None:
        """How this write signs its tags (None: unsigned); see signing.tag_signer."""
        from .signing import tag_signer

        return tag_signer(sign, self.config.signing.sign, self.store.git_config)

    def _move(
        self, program: str, env: str, version: str | None, action: str, reason: str, *, sign: bool | None = None
    ) -> MoveResult:
        return moves.move(self, program, env, version, action, reason, sign=sign)

    # -- quality records ----------------------------------------------------------------------------------------------
    def records(self, resolved: Resolved) -> Records:
        from .records import read

        return read(self.store, resolved.program, resolved.version)

    def evaluate(
        self,
        ref: str,
        devset: Path,
        metric_spec: str,
        *,
        name: str | None = None,
        threads: int = 8,
        verify: bool = True,
        progress: Callable[[int], Callable[[], None]] = lambda total: lambda: None,
    ) -> EvalRecord:
        """Run the version on a dev set with dspy.Evaluate and record {metric, score, n, devset sha256, ...}."""
        from .quality import record_evaluation

        resolved = self.checked(ref, name, verify=verify)
        return record_evaluation(
            self.store,
            resolved,
            lambda: self.materialize(resolved),
            devset,
            metric_spec,
            threads=threads,
            progress=progress,
        )

    def bench(
        self,
        ref: str,
        inputs: Path,
        *,
        name: str | None = None,
        n: int | None = None,
        concurrency: int = 1,
        verify: bool = True,
        progress: Callable[[int], Callable[[], None]] = lambda total: lambda: None,
    ) -> BenchRecord:
        """Call the version `n` times on the inputs and record latency p50/p95/max, tokens and cost per query."""
        from .quality import record_benchmark

        resolved = self.checked(ref, name, verify=verify)
        return record_benchmark(
            self.store, resolved, self.materialize(resolved), inputs, n=n, concurrency=concurrency, progress=progress
        )

    # -- verifying, exporting, loading --------------------------------------------------------------------------
    def verify(
        self,
        ref: str | None = None,
        name: str | None = None,
        *,
        everything: bool = False,
        require_signed: bool = False,
        load: bool = False,
    ) -> list[Problem]:
        """Problems of one ref's version, of every version (`everything`), or of what each environment points to;
        plus the environment tags of the programs involved. Empty when all is sound. Read from git, never running
        a bundle's code; `load` also checks that each program.json loads into its code, in a child process.
        `require_signed` also asks each of those version and environment tags for a signature by a key
        registry.toml allows (trust.py)."""
        found = self.verify_findings(ref, name, everything=everything, require_signed=require_signed, load=load)
        return [finding.problem for finding in found if not finding.warning]

    def verify_findings(
        self,
        ref: str | None = None,
        name: str | None = None,
        *,
        everything: bool = False,
        require_signed: bool = False,
        load: bool = False,
    ) -> Iterator[Finding]:
        """What `dspyreg verify` reports, as `verify` checks it: its problems, and the drift warnings of
        drift_warnings. Without `ref`, yielded as each version is checked (one version in memory at a time: `verify
        --all` over ten thousand versions streams); a ref or name that does not resolve raises here, before any."""
        from .checks import Finding, drift_problems, program_findings, ref_problems

        if ref is not None:
            resolved = self.resolve(ref, name)
            problems = ref_problems(self, resolved, require_signed=require_signed, load=load)
            warnings = drift_problems(self, [resolved], refused=False)
            return iter([*(Finding(p) for p in problems), *(Finding(w, warning=True) for w in warnings)])
        programs = [self._known(name)] if name else self.programs()
        return program_findings(self, programs, everything=everything, require_signed=require_signed, load=load)

    def drift_warnings(
        self, ref: str | None = None, name: str | None = None, *, everything: bool = False
    ) -> list[Problem]:
        """The DSPy (and LiteLLM) differences between what is installed and what the versions `verify` checks
        record, that registry.toml's [runtime] policy reports without refusing (those it refuses are problems of
        `verify`). Reads package metadata: imports nothing."""
        from .checks import drift_problems, verified_targets

        if ref is not None:
            return drift_problems(self, [self.resolve(ref, name)], refused=False)
        programs = [self._known(name)] if name else self.programs()
        targets = [t for p in programs for t in verified_targets(self, p, everything=everything)]
        return drift_problems(self, targets, refused=False)

    def checked(
        self, ref: str, name: str | None = None, *, verify: bool = True, require_signed: bool = False
    ) -> Resolved:
        """Resolve `ref` for use (load, export, serve): refuse it when its version or its environment tag fails
        verification, or (`require_signed`, even without `verify`) is not signed by a key registry.toml allows,
        naming the file or ref at fault."""
        from .checks import check_for_use

        resolved = self.resolve(ref, name)
        check_for_use(self, resolved, verify=verify, require_signed=require_signed)
        return resolved

    def export(
        self, resolved: Resolved, dest: Path, *, force: bool = False, k8s: K8sOptions | None = None
    ) -> ExportResult:
        """Write the deployment bundle of `resolved` to `dest` (see delivery.export)."""
        return delivery.export(self, resolved, dest, force=force, k8s=k8s)

    def deployment(self, resolved: Resolved) -> dict[str, bytes]:
        """Every file of the deployment bundle of `resolved` (see delivery.deployment)."""
        return delivery.deployment(self, resolved)

    def bundle(self, resolved: Resolved) -> list[BundleEntry]:
        """The files of `resolved`'s bundle, every path checked before anything is written (UnsafeTree names a
        forged entry such as `../evil.py`)."""
        where = f"{resolved.program}/{resolved.version}"
        return self.store.list_bundle(resolved.commit, f"{resolved.program}/", where=where)

    def materialize(self, resolved: Resolved) -> Path:
        """The deployment bundle of `resolved` in the cache (see delivery.materialize)."""
        return delivery.materialize(self, resolved)

    def load(
        self, ref: str, name: str | None = None, *, verify: bool = True, require_signed: bool = False
    ) -> dspy.Module:
        """The program of `ref`, built from its bundled code and JSON state (never pickle), ready to call;
        `require_signed` refuses it unless its tags are signed by keys registry.toml allows."""
        return self.build(self.checked(ref, name, verify=verify, require_signed=require_signed))

    def build(self, resolved: Resolved) -> dspy.Module:
        """The program of `resolved` (checked by the caller), from its bundled code and JSON state, ready to call."""
        return delivery.build(self, resolved)

    def check_drift(self, folder: Path, resolved: Resolved, report: Callable[[str], None] | None = None) -> None:
        """Refuse or report the DSPy drift of the bundle in `folder` (see delivery.check_drift)."""
        delivery.check_drift(self, folder, resolved, report)
