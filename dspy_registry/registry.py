"""The facade: init, publish, list, show, log, diff, promote, rollback and load on one registry.

Every write builds objects first and then moves all the refs it touches in one transaction with expected old
values (see gitstore.py), so a command either happens whole or not at all. Reads look refs up by name, never by
scanning every tag, except `list`, whose job is to list them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import (
    ConflictError,
    CorruptRecord,
    DuplicateVersion,
    ForgedTag,
    GateRefused,
    InvalidName,
    NotARegistry,
    NothingToRollBack,
    RegistryError,
    UnknownRef,
)
from .gitstore import BundleEntry, GitStore, RefUpdate, TreeEntry, is_url, utc_now
from .manifest import BadManifest, Manifest, RegistryConfig
from .records import Records, latest_scores
from .refs import (
    JOURNAL_REF,
    MAIN_REF,
    PROGRAM_RE,
    ROLLBACK_ENV,
    SHA_RE,
    ZERO_SHA,
    RefSpec,
    check_environment,
    check_program,
    check_text,
    is_version,
    normalize_version,
    parse_ref,
    same_release,
    split_tag_ref,
    tag_ref,
    version_key,
)
from .signing import split_signature, tag_signer
from .state import canonical_json, mask_lm_state

if TYPE_CHECKING:
    import dspy

    from .bundle import ProgramSource
    from .diff import Diff, PredictorView, ProgramView
    from .export import ExportResult
    from .verify import Problem

DEFAULT_REGISTRY = "registry"
UNSET = "unset"  # the one word for an environment that points nowhere, in every command's output
TEMPLATE_DIR_NAMES = ("registry_template", "../registry-template")
PUBLISH_RETRIES = 5
BUNDLE_LAYOUT = 3  # bump when export writes different files, so caches of older layouts are not reused


# -- results ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resolved:
    """A ref resolved: the published version it names and that version's commit."""

    program: str
    version: str
    commit: str
    environment: str | None = None


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    commit: str
    created: str
    environments: tuple[str, ...]
    dev_score: float | None
    optimizer: str | None = None
    trainset_size: int | None = None
    notes: str = ""
    eval_score: float | None = None  # the latest `dspyreg eval` record, beside the publish-time dev_score

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "commit": self.commit,
            "created": self.created,
            "environments": list(self.environments),
            "dev_score": self.dev_score,
            "eval_score": self.eval_score,
            "optimizer": self.optimizer,
            "trainset_size": self.trainset_size,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class VersionDetail:
    info: VersionInfo
    manifest: Manifest
    predictors: Mapping[str, Any]
    records: Records

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        manifest = {
            "schema_version": m.schema_version,
            "program": vars(m.program),
            "optimization": {
                **{k: v for k, v in vars(m.optimization).items() if k != "metrics"},
                "metrics": dict(m.optimization.metrics),
            },
            "runtime": dict(m.runtime),
            "saved_with": dict(m.saved_with),
            "lm": dict(m.lm),
            "files": dict(m.files),
        }
        base = self.info.to_json()
        return {
            **{k: base[k] for k in ("name", "version", "commit", "created", "environments")},
            "manifest": manifest,
            "predictors": dict(self.predictors),
            "evaluations": [dict(r) for r in self.records.evaluations],
            "benchmarks": [dict(r) for r in self.records.benchmarks],
        }


@dataclass(frozen=True)
class JournalEntry:
    program: str
    env: str
    from_version: str | None
    to_version: str | None
    action: str  # "promote", "rollback", or "managed" for the rollback tag that follows prod
    actor: str
    time: str
    reason: str = ""
    move: str = ""  # unique per transaction: two identical moves in the same second are still two writes
    override: str = ""  # the gates a forced promote overrode, with their numbers

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class MoveResult:
    entries: tuple[JournalEntry, ...]

    @property
    def changed(self) -> bool:
        return bool(self.entries)


@dataclass(frozen=True)
class PublishResult:
    name: str
    version: str
    commit: str
    files: tuple[str, ...]
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class _EnvState:
    """An environment of a program: its tag's raw value and version, and the journal's stack of earlier versions."""

    raw: str  # the tag object sha, or ZERO_SHA when unset
    version: str | None
    history: tuple[str, ...]


def default_registry() -> str:
    from .hints import default_location

    return default_location()


# -- the registry ----------------------------------------------------------------------------------------------------
class Registry:
    def __init__(self, store: GitStore, location: str) -> None:
        self.store = store
        self.location = location
        self._config: RegistryConfig | None = None

    @classmethod
    def open(cls, location: str | Path | None = None) -> Registry:
        """A registry by path, by git URL (through its cache clone), or by a local clone of a remote one.

        A remote registry's refs are brought up to date first, moved tags included, so nothing acts on a stale prod.
        """
        where = str(location or default_registry())
        store = GitStore.cache_of(where, cache_dir()) if is_url(where) else _local_store(Path(where))
        try:
            store.sync()
            settings = store.read_blob(MAIN_REF, "registry.toml")
            if settings is None:
                from .hints import init_elsewhere

                # `init` refuses a repository that has a main branch already: only an empty one can become a registry.
                empty = store.ref_value(MAIN_REF) is None and not is_url(where)
                hint = f"create one with `dspyreg init {where}`" if empty else init_elsewhere(Path(where))
                raise NotARegistry(
                    f"{where} is a git repository but not a dspyreg registry (no registry.toml on main): {hint}"
                )
            registry = cls(store, where)
            registry._config = RegistryConfig.loads(settings)  # every value checked before any command acts on it
        except BaseException:
            store.close()
            raise
        return registry

    @classmethod
    def init(cls, location: str | Path | None = None, *, bare: bool = True) -> Registry:
        """A new registry from registry-template/: in a new or empty folder, an empty repository, or an empty remote."""
        where = str(location or default_registry())
        if is_url(where):
            store = GitStore.cache_of(where, cache_dir())
            existing = store.remote_refs()
            if MAIN_REF in existing:
                raise NotARegistry(
                    f"{where} already has a main branch (is it a registry already?): choose an empty repository"
                )
            _refuse_foreign_refs(where, list(existing))
            return cls._write_template(store, where)
        path = Path(where)
        if path.exists() and not path.is_dir():
            raise NotARegistry(f"{path} exists and is not a folder")
        if path.is_dir() and any(path.iterdir()):
            try:
                store = GitStore.open(path)
            except NotARegistry:
                from .hints import init_elsewhere

                raise NotARegistry(f"{path} is not empty and not a git repository: {init_elsewhere(path)}") from None
            if store.ref_value(MAIN_REF) is not None:
                store.close()
                from .hints import init_elsewhere

                raise NotARegistry(
                    f"{path} already has a main branch (is it a registry already? then use it with `--registry "
                    f"{path}`): or {init_elsewhere(path)}"
                )
            try:
                _refuse_foreign_refs(where, [ref for (ref,) in store.for_each_ref(["%(refname)"])])
            except NotARegistry:
                store.close()
                raise
        else:
            try:
                store = GitStore.init(path, bare=bare)
            except OSError as err:
                raise NotARegistry(f"cannot create a registry in {path}: {err.strerror or err}") from None
        registry = cls._write_template(store, where)
        if not bare and store.git_dir == (path / ".git").resolve():
            store.run(f"--work-tree={path}", "reset", "-q", "--hard", MAIN_REF)  # show the template in the new checkout
        return registry

    @classmethod
    def _write_template(cls, store: GitStore, where: str) -> Registry:
        files = {
            str(p.relative_to(template_dir())): p.read_bytes() for p in sorted(template_dir().rglob("*")) if p.is_file()
        }
        blobs = store.write_blobs(files)
        tree = store.write_tree(None, {p: TreeEntry("100644", "blob", sha) for p, sha in blobs.items()})
        who, now = store.identity(), utc_now()
        main = store.write_commit(tree, [], "Initialize dspyreg registry\n", who, now)
        journal = store.write_commit(store.write_tree(None, {}), [], "Start the dspyreg journal\n", who, now)
        store.transaction([RefUpdate(MAIN_REF, main, ZERO_SHA), RefUpdate(JOURNAL_REF, journal, ZERO_SHA)])
        return cls(store, where)

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

    def _program(self, program: str | None) -> str:
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

    def _check_env(self, env: str, *, allow_rollback: bool = False) -> str:
        check_environment(env)
        known = self.config.environments + ((ROLLBACK_ENV,) if allow_rollback else ())
        if env not in known:
            raise UnknownRef(f"unknown environment {env!r}: this registry's environments are {', '.join(known)}")
        return env

    # -- resolving ---------------------------------------------------------------------------------------------------
    def resolve(self, ref: str, name: str | None = None) -> Resolved:
        spec = parse_ref(ref, name)
        program = self._program(spec.program)
        if spec.version is not None:
            commit = self.store.peel_to_commit(tag_ref(program, spec.version))
            if commit is not None:
                return Resolved(program, spec.version, commit)
            leaf = ref.rpartition("/")[2]
            if not SHA_RE.fullmatch(leaf):  # an all-digit short sha also reads as a version
                raise UnknownRef(f"{program} {spec.version} is not published: see `dspyreg list {program}`")
            spec = RefSpec(program, sha=leaf)
        if spec.environment is not None:
            env = self._check_env(spec.environment, allow_rollback=True)
            state = self._env_state(program, env, None)
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
        return _bundle_json(self._file(resolved, path), f"{resolved.program} {resolved.version}: {path}")

    def _env_state(self, program: str, env: str, journal: str | None) -> _EnvState:
        """The env tag as it is now; its history as the journal commit `journal` has it (none when None)."""
        tag = self.store.read(tag_ref(program, env))
        if tag is None:
            raw, version = ZERO_SHA, None
        else:
            raw, version = tag.sha, _payload_version(_tag_payload(tag.data))
        blob = self.store.read_blob(journal, f"{program}/{env}.json") if journal else None
        history = _journal_history(blob, f"{program}/{env}.json", journal) if blob else ()
        return _EnvState(raw, version, history)

    def environments_of(self, program: str) -> dict[str, str]:
        """env -> version for every environment of `program` that is set (rollback included)."""
        out = {}
        for env in (*self.config.environments, ROLLBACK_ENV):
            version = self._env_state(program, env, None).version
            if version is not None:
                out[env] = version
        return out

    # -- reading -----------------------------------------------------------------------------------------------------
    def versions(self, program: str | None = None) -> list[VersionInfo]:
        """Every published version (of one program, or all), oldest first by semantic version."""
        pattern = f"refs/tags/{self._known(program)}/" if program is not None else "refs/tags/"
        rows = self.store.for_each_ref(["%(refname)", "%(*objectname)", "%(objecttype)", "%(contents)"], pattern)
        found: list[tuple[str, str, str, dict[str, Any]]] = []
        envs: dict[tuple[str, str], list[str]] = {}
        for refname, commit, kind, contents in rows:
            parsed = split_tag_ref(refname)
            if parsed is None or kind != "tag":
                continue
            prog, leaf = parsed
            payload = _tag_payload(contents.encode())
            if is_version(leaf):
                found.append((prog, leaf, commit, payload))
            elif (to_version := _payload_version(payload)) is not None:
                envs.setdefault((prog, to_version), []).append(leaf)
        order = {env: i for i, env in enumerate((*self.config.environments, ROLLBACK_ENV))}
        found.sort(key=lambda r: (r[0], version_key(r[1])))
        scores = latest_scores(self.store)
        return [
            VersionInfo(
                name=prog,
                version=version,
                commit=commit,
                created=_typed(payload, "created", str) or "",
                environments=tuple(sorted(envs.get((prog, version), []), key=lambda e: order.get(e, 99))),
                dev_score=_typed(payload, "dev_score", float),
                optimizer=_typed(payload, "optimizer", str),
                trainset_size=_typed(payload, "trainset_size", int),
                notes=_typed(payload, "notes", str) or "",
                eval_score=scores.get((prog, version)),
            )
            for prog, version, commit, payload in found
        ]

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
        info = replace(info, eval_score=records.latest_score)
        return VersionDetail(info, manifest, self._json_file(resolved, "prompts.json"), records)

    def log(self, program: str | None = None, env: str | None = None) -> list[JournalEntry]:
        """Every environment move, oldest first; optionally of one program and one environment."""
        if program is not None:
            self._known(program)
        if env is not None:
            self._check_env(env, allow_rollback=True)
        if self.store.ref_value(JOURNAL_REF) is None:
            return []
        entries = [
            e
            for message in self.store.messages(JOURNAL_REF)
            for e in reversed(_journal_entries(message))
            if (program is None or e.program == program) and (env is None or e.env == env)
        ]
        entries.reverse()
        return entries

    def view(self, ref: str, name: str | None = None) -> ProgramView:
        from .diff import view_from_bundle

        resolved = self.resolve(ref, name)
        manifest = self.manifest(resolved)
        metadata = _manifest_metadata(manifest) | _records_metadata(self.records(resolved))
        return view_from_bundle(
            f"{resolved.program}/{resolved.version}",
            self._json_file(resolved, "prompts.json"),
            self._json_file(resolved, "program.json"),
            metadata,
            manifest.program.entrypoint,
            self._interface(resolved),
        )

    def _interface(self, resolved: Resolved) -> dict[str, Any] | None:
        """interface.json, or None for a version published before it existed (or holding something else)."""
        data = self.store.read_blob(resolved.commit, f"{resolved.program}/interface.json")
        try:
            value = json.loads(data) if data is not None else None
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def diff(self, a: str, b: str, name: str | None = None, program_spec: str | None = None) -> Diff:
        """Diff two sides, each a registry ref or a saved state file. A file side without `program_spec` borrows
        field names and types from the registry side, so the two compare like two versions."""
        from .diff import diff_views

        refs = {side: self.view(side, name) for side in (a, b) if not is_state_path(side)}
        typed = next(iter(refs.values())).predictors if refs and program_spec is None else None
        views = [refs[side] if side in refs else state_view(Path(side), program_spec, typed) for side in (a, b)]
        return diff_views(*views)

    # -- writing -----------------------------------------------------------------------------------------------------
    def publish(
        self,
        source: ProgramSource,
        state: dict[str, Any],
        *,
        name: str,
        version: str,
        optimizer: str | None = None,
        trainset_size: int | None = None,
        dev_score: float | None = None,
        notes: str = "",
        lm: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        origin: str = "state",
        record_with: Any = None,
        sign: bool | None = None,
        allow_unrendered_demos: bool = False,
    ) -> PublishResult:
        from .bundle import PublishMeta, build_bundle

        version = self.check_new_version(name, version)
        signer = self._signer(sign)
        if dev_score is not None and not 0.0 <= dev_score <= 1.0:
            raise InvalidName(f"dev score {dev_score} is not a fraction in [0, 1] (divide a percentage by 100)")
        if trainset_size is not None and not 0 <= trainset_size < 2**63:
            raise InvalidName(f"trainset size {trainset_size} is not a count (0 to 2**63-1, what TOML can hold)")
        check_text("--notes", notes, multiline=True)
        for option, text in (("--optimizer", optimizer), ("--lm", (lm or {}).get("model"))):
            if isinstance(text, str):
                check_text(option, text)
        who, now = self.store.identity(), utc_now()
        created = now.isoformat().replace("+00:00", "Z")
        meta = PublishMeta(
            name,
            version,
            created,
            f"{who.name} <{who.email}>",
            optimizer,
            trainset_size,
            dev_score,
            notes,
            lm,
            metrics,
            record_with,
            allow_unrendered_demos,
        )
        bundle = build_bundle(source, state, meta, origin=origin)
        warnings = bundle.warnings + self._interface_warnings(name, version, source.entrypoint, bundle.files)
        blobs = self.store.write_blobs(bundle.files)
        subtree = self.store.write_tree(None, {p: TreeEntry("100644", "blob", s) for p, s in blobs.items()})
        payload = {
            "created": created,
            "dev_score": dev_score,
            "optimizer": optimizer,
            "trainset_size": trainset_size,
            "notes": notes,
        }
        message = f"Publish {name} {version}\n\n" + (f"{notes}\n\n" if notes else "") + _payload_line(payload)
        tag_name = tag_ref(name, version)
        for _attempt in range(PUBLISH_RETRIES):
            parent = self.store.ref_value(MAIN_REF)
            assert parent is not None  # Registry.open checked main
            root = self.store.write_tree(parent, {name: TreeEntry("040000", "tree", subtree)})
            commit = self.store.write_commit(root, [parent], message, who, now)
            tag = self.store.write_tag(commit, f"{name}/{version}", message, who, now, signer)
            try:
                self.store.transaction([RefUpdate(MAIN_REF, commit, parent), RefUpdate(tag_name, tag, ZERO_SHA)])
            except ConflictError:
                self.store.sync()  # a remote registry: learn where main and the tag are now
                if self.store.ref_value(tag_name) is not None:
                    raise ConflictError(
                        f"another writer published {name} {version} first; nothing was changed"
                    ) from None
                continue  # main moved (another publish): rebuild on the new tip
            return PublishResult(name, version, commit, tuple(sorted(bundle.files)), warnings)
        raise ConflictError(
            f"main kept moving while publishing {name} {version} ({PUBLISH_RETRIES} tries); "
            "nothing was changed: re-run the command"
        )

    def _interface_warnings(
        self, name: str, version: str, entrypoint: str, files: Mapping[str, bytes]
    ) -> tuple[str, ...]:
        """A warning when callers of the highest published version of `name` would see another program."""
        from .interface_diff import diff_interface, publish_warning

        published = [
            v for (v,) in self.store.for_each_ref(["%(refname:lstrip=3)"], f"refs/tags/{name}/") if is_version(v)
        ]
        if not published or "interface.json" not in files:
            return ()
        previous = max(published, key=version_key)
        try:
            resolved = self.resolve(previous, name)
            before = self.manifest(resolved).program.entrypoint, self._interface(resolved)
        except RegistryError:
            return ()  # a damaged earlier version is verify's to report; it does not stop a new one
        changes = diff_interface(*before, entrypoint, json.loads(files["interface.json"]))
        return (publish_warning(name, previous, version, changes),) if changes else ()

    def check_new_version(self, name: str, version: str) -> str:
        """The normalized version, if `name` may publish it; raises otherwise."""
        check_program(name)
        version = normalize_version(version)
        if self.store.ref_value(tag_ref(name, version)) is not None:
            raise DuplicateVersion(f"{name} {version} is already published; versions are immutable: use a new version")
        for (existing,) in self.store.for_each_ref(["%(refname:lstrip=3)"], f"refs/tags/{name}/"):
            if is_version(existing) and same_release(existing, version):
                raise DuplicateVersion(
                    f"{name} {existing} is already published and names the same release as {version}"
                )
        return version

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
        `force` (with a reason) overrides the gates and the journal records the override."""
        spec = parse_ref(source, name)
        program = self._program(spec.program)
        envs = self.config.environments
        if spec.environment is not None:
            src_env = self._check_env(spec.environment, allow_rollback=True)
            if to is None:
                if src_env == ROLLBACK_ENV or envs.index(src_env) == len(envs) - 1:
                    raise InvalidName(f"{src_env} is the last environment: say where to with --to")
                to = envs[envs.index(src_env) + 1]
        elif to is None:
            to = envs[0]
        if to == ROLLBACK_ENV:
            raise InvalidName(
                "the rollback environment is managed by dspyreg: promote to prod, or use `dspyreg rollback`"
            )
        target_env = self._check_env(to)
        check_text("--reason", reason, multiline=True)
        if force and not reason.strip():
            raise InvalidName("--force needs --reason: the journal records why the gates were overridden")
        resolved = self.resolve(str(RefSpec(program, spec.version, spec.environment, spec.sha)))
        refusals = self.gate_refusals(program, target_env, resolved)
        if refusals and not force:
            raise GateRefused(
                f"promotion of {program} {resolved.version} to {target_env} refused by registry.toml's gates: "
                f"{'; '.join(refusals)} (override with --force --reason)"
            )
        return self._move(
            program, target_env, resolved.version, "promote", reason, override="; ".join(refusals), sign=sign
        )

    def gate_refusals(self, program: str, env: str, candidate: Resolved) -> list[str]:
        """What registry.toml's [gates.<env>] say against moving `env` to `candidate` (empty: the gates allow it)."""
        gates = self.config.gates.get(env) or {}
        if not gates:
            return []
        records = self.records(candidate)
        score = records.latest_score
        if score is None:
            score = self.manifest(candidate).optimization.dev_score
        name = f"{program} {candidate.version}"
        refusals = []
        if gates.get("require_eval") and records.latest_evaluation is None:
            refusals.append(f"{name} has no evaluation record (require_eval): run `dspyreg eval`")
        minimum = gates.get("min_dev_score")
        if minimum is not None and (score is None or score < float(minimum)):
            refusals.append(f"{name} scores {_fmt(score)}, below min_dev_score {float(minimum):.3f}")
        current = self._env_state(program, env, None).version
        if gates.get("no_regression") and current and current != candidate.version:
            incumbent = self.resolve(current, program)
            theirs = self.records(incumbent).latest_score
            if theirs is None:
                theirs = self.manifest(incumbent).optimization.dev_score
            if theirs is not None and (score is None or score < theirs):
                refusals.append(f"{name} scores {_fmt(score)}, below {env}'s {current} at {theirs:.3f} (no_regression)")
        return refusals

    def rollback(
        self, env: str | None = None, *, name: str | None = None, reason: str = "", sign: bool | None = None
    ) -> MoveResult:
        program = self._program(name)
        check_text("--reason", reason, multiline=True)
        return self._move(program, self._check_env(env or self.production), None, "rollback", reason, sign=sign)

    def _signer(self, sign: bool | None) -> Callable[[bytes], bytes] | None:
        """How this write signs its tags (None: unsigned); see signing.tag_signer."""
        return tag_signer(sign, self.config.signing.sign, self.store.git_config)

    def _move(
        self,
        program: str,
        env: str,
        version: str | None,
        action: str,
        reason: str,
        *,
        override: str = "",
        sign: bool | None = None,
    ) -> MoveResult:
        """Move env (and, for production, the rollback tag) and append the journal, in one transaction.

        Every expected old value comes from the reads the new state was computed from (the journal first, then the
        tags), so a writer that moved any of them meanwhile makes this transaction fail instead of being overwritten.
        """
        journal_old = self.store.ref_value(JOURNAL_REF)
        current = self._env_state(program, env, journal_old)
        if action == "rollback":
            if not current.history:
                raise NothingToRollBack(
                    f"no earlier version of {program}/{env} in the journal: nothing to roll back to"
                )
            version, history = current.history[-1], current.history[:-1]
        else:
            history = current.history + ((current.version,) if current.version else ())
        assert version is not None
        from .verify import version_tag_problems

        forged = version_tag_problems(self, program, version)
        if forged:  # the env tag would point wherever the version tag was moved to
            raise ForgedTag(f"refusing to {action} {program}/{env} to {version}: {forged[0]}; nothing was changed")
        if current.version == version:
            return MoveResult(())
        signer = self._signer(sign)
        who, now = self.store.identity(), utc_now()
        actor, when = f"{who.name} <{who.email}>", now.isoformat().replace("+00:00", "Z")
        move = uuid.uuid4().hex[:16]
        entry = JournalEntry(program, env, current.version, version, action, actor, when, reason, move, override)
        moves = [(current, entry)]
        if env == self.production:
            rollback = self._env_state(program, ROLLBACK_ENV, None)
            new_rollback = history[-1] if history else None
            if new_rollback != rollback.version:
                reason = f"previous {env} version"
                entry = JournalEntry(
                    program, ROLLBACK_ENV, rollback.version, new_rollback, "managed", actor, when, reason, move
                )
                moves.append((rollback, entry))
        updates = []
        for state, entry in moves:
            ref = tag_ref(program, entry.env)
            if entry.to_version is None:
                updates.append(RefUpdate(ref, ZERO_SHA, state.raw))
                continue
            target = self.store.peel_to_commit(tag_ref(program, entry.to_version))
            if target is None:
                raise UnknownRef(f"{program} {entry.to_version} is not published")
            message = f"{entry.action} {program}/{entry.env}: {entry.from_version or '-'} -> {entry.to_version}\n\n"
            tag = self.store.write_tag(
                target, f"{program}/{entry.env}", message + _payload_line(entry.to_json()), who, now, signer
            )
            updates.append(RefUpdate(ref, tag, state.raw))
        blob = self.store.write_blobs({"h": canonical_json({"version": version, "history": list(history)})})["h"]
        tree = self.store.write_tree(journal_old, {f"{program}/{env}.json": TreeEntry("100644", "blob", blob)})
        summary = f"{action} {program}/{env}: {current.version or '-'} -> {version}\n\n"
        body = "".join(_payload_line(entry.to_json()) for _, entry in moves)
        journal = self.store.write_commit(tree, [journal_old] if journal_old else [], summary + body, who, now)
        updates.append(RefUpdate(JOURNAL_REF, journal, journal_old or ZERO_SHA))
        try:
            self.store.transaction(updates)
        except ConflictError as err:
            raise ConflictError(self._lost_to(program, env, journal_old, str(err))) from None
        return MoveResult(tuple(entry for _, entry in moves))

    def _lost_to(self, program: str, env: str, since: str | None = None, fallback: str = "") -> str:
        """Say which move beat ours: the first journal commit after `since`, the journal commit ours was built on.
        Later entries came after the winner (the latest one names the wrong move); when the journal did not move
        from `since` (a tag moved by hand) or was rewritten, `fallback` names the ref that changed."""
        self.store.sync()
        self.store.close()  # read the journal afresh
        winner = self._first_move_since(since, program, env) if since else None
        if winner is None:
            return fallback or f"another writer changed {tag_ref(program, env)} first; nothing was changed: re-run"
        who = winner.actor.split(" <")[0]
        where = f"{winner.program}/{winner.env}"
        moved = f"{winner.action} {where} {winner.from_version or UNSET} -> {winner.to_version or UNSET}"
        return (
            f"another writer moved {where} first ({moved} by {who} at {winner.time}); "
            "nothing was changed: re-run to apply yours"
        )

    def _first_move_since(self, since: str, program: str, env: str) -> JournalEntry | None:
        """The entry of the first journal commit after `since` (for program/env if it has one), or None."""
        now = self.store.ref_value(JOURNAL_REF)
        if now is None or now == since:
            return None
        try:
            self.store.run("merge-base", "--is-ancestor", since, now)
        except RegistryError:
            return None  # the journal was rewritten: its commits since ours say nothing of who won
        messages = list(self.store.messages(f"{since}..{now}"))
        entries = _journal_entries(messages[-1]) if messages else []
        return next((e for e in entries if (e.program, e.env) == (program, env)), entries[0] if entries else None)

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
    ) -> dict[str, Any]:
        """Run the version on a dev set with dspy.Evaluate and record {metric, score, n, devset sha256, ...}."""
        from . import quality, records
        from .runtime.inference import PipelineServer

        resolved = self.checked(ref, name, verify=verify)
        metric = quality.import_metric(metric_spec)
        server = PipelineServer(self.materialize(resolved))
        rows = quality.read_jsonl(devset, inputs=server.inputs, required=server.required)
        if server.lm is None:
            raise RegistryError(
                "no LM to evaluate with: set DSPYREG_LM_MODEL (and DSPYREG_LM_API_KEY or DSPYREG_LM_API_BASE)"
            )
        score, n = quality.evaluate(
            server.program,
            server.lm,
            rows,
            server.inputs,
            metric,
            metric_spec,
            threads=threads,
            advance=progress(len(rows.lines)),
        )
        record = {
            "metric": metric_spec,
            "score": score,
            "n": n,
            "devset": devset.name,
            "devset_sha256": rows.sha256,
            "dspy_version": _dspy_version(),
            "lm": server.lm.model,
            "commit": resolved.commit,
        }
        return records.append(self.store, resolved.program, resolved.version, "evaluations", record)

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
    ) -> dict[str, Any]:
        """Call the version `n` times on the inputs and record latency p50/p95/max, tokens and cost per query."""
        from . import quality, records
        from .runtime.inference import PipelineServer

        resolved = self.checked(ref, name, verify=verify)
        server = PipelineServer(self.materialize(resolved))
        rows = quality.read_jsonl(inputs, inputs=server.inputs, required=server.required)
        if server.lm is None:
            raise RegistryError(
                "no LM to benchmark: set DSPYREG_LM_MODEL (and DSPYREG_LM_API_KEY or DSPYREG_LM_API_BASE)"
            )
        count = n or len(rows.lines)
        if count < 1 or concurrency < 1:
            raise InvalidName("-n and --concurrency must be at least 1")
        result = quality.bench(
            server.run, rows, server.inputs, n=count, concurrency=concurrency, advance=progress(count)
        )
        record = {
            **result.record(),
            "inputs": inputs.name,
            "inputs_sha256": rows.sha256,
            "dspy_version": _dspy_version(),
            "lm": server.lm.model,
            "commit": resolved.commit,
        }
        return records.append(self.store, resolved.program, resolved.version, "benchmarks", record)

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
        from .trust import signature_problems
        from .verify import verify_environments, verify_version

        problems: list[Problem] = []
        all_envs = (*self.config.environments, ROLLBACK_ENV)
        if ref is not None:
            resolved = self.resolve(ref, name)
            problems = verify_version(self, resolved, load=load) + verify_environments(self, resolved.program)
            if require_signed:
                problems += signature_problems(
                    self, resolved.program, versions=[resolved.version], environments=all_envs
                )
            return problems
        programs = [self._known(name)] if name else self.programs()
        seen: set[tuple[str, str]] = set()
        for program in programs:
            targets: list[Resolved | None]
            if everything:
                targets = [Resolved(v.name, v.version, v.commit) for v in self.versions(program)]
            else:
                targets = [self._env_target(program, env) for env in (*self.config.environments, ROLLBACK_ENV)]
            for target in targets:
                if target is not None and (target.version, target.commit) not in seen:
                    seen.add((target.version, target.commit))
                    problems += verify_version(self, target, load=load)
                    if require_signed:
                        problems += signature_problems(self, program, versions=[target.version])
            problems += verify_environments(self, program)
            if require_signed:
                problems += signature_problems(self, program, environments=all_envs)
        return problems

    def _env_target(self, program: str, env: str) -> Resolved | None:
        try:
            return self.resolve(env, program)
        except (UnknownRef, BadManifest):  # a tag moved to a commit without a sound manifest: verify_environments says
            return None

    def checked(
        self, ref: str, name: str | None = None, *, verify: bool = True, require_signed: bool = False
    ) -> Resolved:
        """Resolve `ref` for use (load, export, serve): refuse it when its version or its environment tag fails
        verification, or (`require_signed`, even without `verify`) is not signed by a key registry.toml allows,
        naming the file or ref at fault."""
        from .trust import signature_problems
        from .verify import VerificationFailed, verify_environments, verify_version

        resolved = self.resolve(ref, name)
        envs = (resolved.environment,) if resolved.environment else ()
        problems: list[Problem] = []
        if verify:
            problems += verify_version(self, resolved, load=False)
            problems += verify_environments(self, resolved.program, envs) if envs else []
        if require_signed:
            problems += signature_problems(
                self, resolved.program, versions=[resolved.version], environments=envs, expect_commit=resolved.commit
            )
        if problems:
            raise VerificationFailed(f"{resolved.program}/{resolved.environment or resolved.version}", problems)
        return resolved

    def export(self, resolved: Resolved, dest: Path, *, force: bool = False) -> ExportResult:
        """Write the deployment bundle of `resolved` to `dest`, built aside first. Into a new or empty folder it is
        renamed in whole; `force` into a used folder replaces only the files the bundle owns (the previous export's
        list and the new bundle's files) and keeps everything else, such as a .venv or an .env."""
        from .export import OWNED_LIST, ExportResult, owned_list, replace_owned, write_inside

        if dest.exists() and not dest.is_dir():
            raise RegistryError(f"{dest} exists and is not a folder: choose a folder to export to")
        used = dest.is_dir() and any(dest.iterdir())
        if used and not force:
            raise RegistryError(
                f"{dest} is not empty: choose an empty folder, or pass --force to replace the files of the bundle "
                "(other files stay)"
            )
        files = self.deployment(resolved)
        files[OWNED_LIST] = owned_list(files)
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

    def deployment(self, resolved: Resolved) -> dict[str, bytes]:
        """Every file of the deployment bundle: the published ones, then what runs them (see export.py), and the
        typed gRPC interface (see proto.py)."""
        from .export import deployment_files
        from .proto import program_proto

        files = {e.path: self.store.blob(e.sha) for e in self.bundle(resolved)}
        where = f"{resolved.program} {resolved.version}"
        manifest = Manifest.loads(files["manifest.toml"], where=f"{where}: manifest.toml")
        state = _bundle_json(files["program.json"], f"{where}: program.json")
        interface = _bundle_json(
            files.get("interface.json", b'{"inputs": [], "outputs": []}'), f"{where}: interface.json"
        )
        example = _bundle_json(files.get("examples/input.json", b"{}"), f"{where}: examples/input.json")
        records = self.records(resolved)
        proto = program_proto(self, resolved)
        deploy = deployment_files(manifest, resolved.commit, state, interface, example, records, proto, published=files)
        return files | deploy

    def bundle(self, resolved: Resolved) -> list[BundleEntry]:
        """The files of `resolved`'s bundle, every path checked before anything is written (UnsafeTree names a
        forged entry such as `../evil.py`)."""
        where = f"{resolved.program}/{resolved.version}"
        return self.store.list_bundle(resolved.commit, f"{resolved.program}/", where=where)

    def materialize(self, resolved: Resolved) -> Path:
        """The deployment bundle of `resolved` in the cache (one folder per commit and program, written once)."""
        from . import __version__

        dest = cache_dir() / "bundles" / f"{__version__}-{BUNDLE_LAYOUT}" / resolved.commit / resolved.program
        self.bundle(resolved)  # a forged tree is refused even when a folder for it is cached already
        if not (dest / "config.json").is_file():
            try:
                self.export(resolved, dest, force=True)
            except OSError:  # another process wrote it first
                if not (dest / "config.json").is_file():
                    raise
            except RegistryError as err:
                raise RegistryError(f"{err} (the bundle cache: set DSPYREG_CACHE to a folder you can write)") from None
        return dest

    def load(
        self, ref: str, name: str | None = None, *, verify: bool = True, require_signed: bool = False
    ) -> dspy.Module:
        """The program of `ref`, built from its bundled code and JSON state (never pickle), ready to call;
        `require_signed` refuses it unless its tags are signed by keys registry.toml allows."""
        from .runtime.inference import load_program

        resolved = self.checked(ref, name, verify=verify, require_signed=require_signed)
        folder = self.materialize(resolved)
        entrypoint = json.loads((folder / "config.json").read_text())["pipeline"]["entrypoint"]
        try:
            return load_program(folder, entrypoint, resolved.commit)
        except Exception as err:
            raise RegistryError(
                f"{resolved.program} {resolved.version} does not load: {type(err).__name__}: {err}"
            ) from None


# -- helpers shared by the facade and the CLI ------------------------------------------------------------------------
def template_dir() -> Path:
    here = Path(__file__).parent
    for name in TEMPLATE_DIR_NAMES:
        candidate = (here / name).resolve()
        if (candidate / "registry.toml").is_file():
            return candidate
    raise RegistryError("registry template not found: reinstall dspy-registry")


def _local_store(path: Path) -> GitStore:
    """A registry folder; or, for a clone of a registry (a repository with an origin), the shared cache of that
    origin, as for a URL: dspyreg reads and writes the origin, and never syncs into (so never deletes or rewrites)
    the user's own branches, tags and checkout. See docs/remote.md."""
    store = GitStore.open(path)
    origin = store.remote
    if origin is None:
        return store
    settings = store.network_settings()  # e.g. the auth header of a CI checkout: the cache needs it to reach origin
    store.close()
    if not is_url(origin) and not Path(origin).is_absolute():
        origin = str((path / origin).resolve())  # git reads a relative origin from the clone's folder
    return GitStore.cache_of(origin, cache_dir(), settings)


def cache_dir() -> Path:
    configured = os.environ.get("DSPYREG_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dspyreg"


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


def diff_files(a: str, b: str, program_spec: str | None = None) -> Diff:
    from .diff import diff_views

    return diff_views(state_view(Path(a), program_spec), state_view(Path(b), program_spec))


def _fmt(score: float | None) -> str:
    return "nothing (no evaluation, no dev score)" if score is None else f"{score:.3f}"


def _dspy_version() -> str:
    from importlib.metadata import version

    return version("dspy")


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
    return {k: v for k, v in meta.items() if v is not None}


def _records_metadata(records: Records) -> dict[str, Any]:
    """The latest evaluation and benchmark, as diff metadata beside the publish-time dev_score."""
    meta: dict[str, Any] = {}
    if records.latest_evaluation:
        meta["eval.score"] = records.latest_evaluation["score"]
        meta["eval.metric"] = records.latest_evaluation["metric"]
    if records.latest_benchmark:
        for key in ("p50_ms", "p95_ms", "tokens_per_query", "cost_per_query"):
            meta[f"bench.{key}"] = records.latest_benchmark.get(key)
    return {k: v for k, v in meta.items() if v is not None}


def _payload_line(payload: Mapping[str, Any]) -> str:
    return json.dumps(dict(payload), sort_keys=True, ensure_ascii=False) + "\n"


def _tag_payload(data: bytes) -> dict[str, Any]:
    """The JSON line that dspyreg writes last in every tag message (empty for tags made by hand).

    Only the last line of the message counts, after a trailing signature block if the tag is signed, and lines
    are split at "\n" alone: user text above the payload (notes, even with a fake signature block) and Unicode line
    separators inside it (json.dumps keeps U+2028 raw) can never be read back as the payload.
    """
    lines = data.decode(errors="replace").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and lines[-1].startswith("-----END ") and lines[-1].endswith("-----"):  # the message ends signed
        lines = split_signature(data)[0].decode(errors="replace").split("\n")
        while lines and not lines[-1].strip():
            lines.pop()
    if not lines or not lines[-1].startswith("{"):
        return {}
    try:
        value = json.loads(lines[-1])
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _bundle_json(data: bytes, what: str) -> Any:
    """A JSON file of a published bundle; one that is not JSON (a commit made by hand) is CorruptRecord."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise CorruptRecord(f"{what} is not valid JSON: run `dspyreg verify` to see what else is wrong") from None


def _payload_version(payload: Mapping[str, Any]) -> str | None:
    """An environment tag's version, if its payload names one as dspyreg writes it (else: a tag made by hand)."""
    value = payload.get("to_version")
    return value if isinstance(value, str) and is_version(value) and value.startswith("v") else None


def _typed(payload: Mapping[str, Any], key: str, kind: type) -> Any:
    """`payload[key]` if it has the type dspyreg writes (ints count as floats, bools as neither), else None."""
    value = payload.get(key)
    if isinstance(value, bool):
        return None
    if kind is float and isinstance(value, int):
        return float(value)
    return value if isinstance(value, kind) else None


def _journal_history(blob: bytes, path: str, journal: str | None) -> tuple[str, ...]:
    """The stack of earlier versions in a journal file; a file not in dspyreg's shape is refused, not guessed at."""
    try:
        history = json.loads(blob)["history"]
    except (ValueError, RecursionError, KeyError, TypeError, IndexError):
        history = None
    if not isinstance(history, list) or not all(
        isinstance(v, str) and is_version(v) and v.startswith("v") for v in history
    ):
        raise CorruptRecord(
            f'journal {path} at {(journal or "")[:12]} is corrupt (expected {{"history": [versions]}}): '
            f"restore {JOURNAL_REF} from a good commit (`git log {JOURNAL_REF}`)"
        )
    return tuple(history)


_ENTRY_FIELDS = {f: f in ("from_version", "to_version") for f in JournalEntry.__dataclass_fields__}


def _journal_entries(message: str) -> list[JournalEntry]:
    """The JSON lines of a journal commit, one per move (split at "\n" alone, as for tag payloads); a line not in
    the shape dspyreg writes is skipped."""
    entries = []
    for line in message.split("\n"):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(value, dict) and _entry_shaped(value):
                entries.append(JournalEntry(**value))
    return entries


def _entry_shaped(value: dict[str, Any]) -> bool:
    required = {"program", "env", "from_version", "to_version", "action", "actor", "time"}
    return required <= value.keys() <= _ENTRY_FIELDS.keys() and all(
        isinstance(v, str) or (v is None and _ENTRY_FIELDS[k]) for k, v in value.items()
    )


def _refuse_foreign_refs(where: str, refs: list[str]) -> None:
    """`init` writes only into a repository without refs: it never adds branches to someone else's repository."""
    if refs:
        shown = ", ".join(sorted(refs)[:3]) + (" ..." if len(refs) > 3 else "")
        raise NotARegistry(f"{where} already has refs ({shown}): choose a new folder or an empty repository")
