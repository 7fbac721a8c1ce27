"""`dspyreg serve`: the bundle's HTTP API over a backend that follows an environment and swaps versions.

The follower polls the environment tag (a cheap ref read). When it moves, the new version is verified and loaded in
the background and swapped in with one reference assignment: requests in flight finish on the version they started
with, new ones get the new version. A version that fails to verify or load is not swapped in; the server keeps the
one it has and says why in /ready and the log. Imported only by `dspyreg serve` (it needs fastapi and uvicorn).

With `grpc_port`, the process also serves gRPC (grpc_api.py) over the same backend: one loaded version, one swap;
a version whose messages do not compile is not swapped in. With several workers, each worker serves gRPC on the
same port too (SO_REUSEPORT: the kernel spreads connections over them), as each serves HTTP.

With `--canary ENV=PERCENT`, a second follower serves ENV's version to a share of the calls (canary.py).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .canary import CanarySpec, SplitBackend
from .checks import check_for_use
from .errors import RegistryError, RemoteUnreachable
from .gitremote import hide_userinfo
from .gitstore import GitStore, is_url
from .last_good import fallback, record
from .refs import tag_ref
from .registry import Registry, Resolved, cache_dir
from .runtime.api import DEFAULT_MAX_BODY, DEFAULT_THREADS, configure_access_log, create_app, uvicorn_options
from .runtime.inference import PipelineServer
from .runtime.server_limits import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_CONNECTIONS,
    ConnectionLimits,
    port_problem,
)
from .runtime.telemetry import MULTIPROC_ENV

log = logging.getLogger("dspyreg.serve")
CONFIG_ENV = "DSPYREG_SERVE_CONFIG"


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one server process accepts, REST and gRPC alike (docs/security.md); the exported api.py has the same."""

    max_body_bytes: int = DEFAULT_MAX_BODY
    max_batch: int = DEFAULT_MAX_BATCH  # inputs per batch
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # HTTP connections per process
    header_timeout: float = DEFAULT_HEADER_TIMEOUT


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    registry: str
    ref: str
    name: str | None = None
    poll_seconds: float = 2.0
    verify: bool = True
    threads: int = DEFAULT_THREADS
    limits: Limits = Limits()
    grpc_port: int | None = None  # also serve gRPC on this port, on grpc_host
    grpc_host: str = "127.0.0.1"
    grpc_reuse_port: bool = False  # set by serve() when several worker processes share the port
    require_signed: bool = False  # swap in only versions whose tags registry.toml's [signing] allows (trust.py)
    metrics_public: bool = False  # /metrics without the bearer token (a Prometheus scrape usually has none)
    canary: CanarySpec | None = None  # --canary: another environment's version answers a share of the calls

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        """The config a worker process reads back from the environment (`--workers N`)."""
        fields = json.loads(text)
        limits, canary = Limits(**fields.pop("limits")), fields.pop("canary")
        return cls(**fields, limits=limits, canary=CanarySpec(**canary) if canary else None)


class FollowingBackend:
    """Serves `ref`; when `ref` is an environment, follows its tag and swaps to each new verified version."""

    def __init__(
        self, config: ServeConfig, *, follows: tuple[str, str | None] | None = None, vetted: Resolved | None = None
    ) -> None:
        """`follows` (program, environment): follow that environment even while it holds no version (a canary).
        `vetted`: what the caller has just resolved and checked for use, so the first load need not check it again
        while the ref still names it (`dspyreg serve` checks before it starts: a refused version is one line)."""
        self.config = config
        self._vetted = vetted
        location = config.registry
        try:
            if vetted is not None and follows is None:  # the caller has just resolved it from config.registry
                follows = (vetted.program, vetted.environment)
            else:
                with Registry.open(config.registry) as reg:
                    if follows is None:
                        first = reg.resolve(config.ref, config.name)
                        follows = (first.program, first.environment)
                    location = reg.location
        except RemoteUnreachable as err:  # the git host is down: start from the version last verified here
            used = fallback(config.registry, config.ref, config.name, require_signed=config.require_signed, cause=err)
            used.registry.close()
            location = config.registry
            if follows is None:
                follows = (used.resolved.program, used.resolved.environment)
        self.program, self.environment = follows
        self._probe = GitStore.cache_of(location, cache_dir()) if is_url(location) else GitStore.open(Path(location))
        self._server: PipelineServer | None = None
        self._seen: str | None = None  # the tag value (or version) last acted on
        self._problem: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage: str | None = None  # while the remote is unreachable: the one line logged when it went
        # Run on each loaded version before it is swapped in (e.g. compile its gRPC messages); raising refuses it.
        self.prepare: Callable[[PipelineServer], None] | None = None
        self._yanked: str | None = None  # why the version served is yanked, if it is

    # -- what the app asks -----------------------------------------------------------------------------------------
    def current(self) -> PipelineServer | None:
        return self._server

    def status(self) -> dict[str, Any]:
        server = self._server
        problem = server.lm_problem() if server is not None else None
        body: dict[str, Any] = {
            "ready": server is not None and problem is None,
            "program": self.program,
            "environment": self.environment,
            "version": server.version if server else None,
            "commit": server.commit if server else None,
        }
        if self._yanked is not None:  # served because the environment names it, but withdrawn: say so
            body["yanked"] = self._yanked
        if self._problem is not None:
            body["not_swapped_in"] = self._problem
        if self._outage is not None:
            body["registry_unreachable"] = self._outage
        if problem is not None:
            body["reason"] = problem
        return body

    # -- following -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._follow, name="dspyreg-follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
                self._reachable()
            except RemoteUnreachable as err:  # keep serving; one log line per outage, not per poll
                self._unreachable(err)
            except Exception as err:  # a registry hiccup must not kill the follower
                log.warning(json.dumps({"event": "poll_failed", "error": f"{type(err).__name__}: {err}"}))
            if self.environment is None and self._server is not None:
                return  # a fixed version never moves
            self._stop.wait(self.config.poll_seconds)

    def refresh(self) -> bool:
        """Look at the ref once; load, verify and swap in what it names if that changed. True when swapped."""
        with self._lock:
            marker = self._marker()
            if marker == self._seen:
                return False
            self._seen = marker
            try:
                with Registry.open(self.config.registry) as reg:  # a remote registry is synced here, only on change
                    resolved, self._vetted = self._resolve(reg), None
                    if self._server is not None and self._server.commit == resolved.commit:
                        return False
                    server = PipelineServer(reg.materialize(resolved), runtime_policy=dict(reg.config.runtime))
                    yanked = reg.yanked(resolved)
                if self.prepare is not None:
                    self.prepare(server)
                if self.config.verify:
                    record(reg, self.config.ref, resolved)  # the fallback of a later outage (last_good.py)
            except RemoteUnreachable:
                self._seen = None  # not a refusal of this version: look again at the next poll
                raise
            except Exception as err:
                self._refuse(marker, err)
                return False
        previous = self._server
        self._server = server  # the swap: one reference assignment
        self._problem = None
        self._yanked = yanked
        swapped = {"event": "swapped", "from": previous.version if previous else None, **_what(resolved)}
        log.warning(json.dumps({**swapped, **({"yanked": yanked} if yanked is not None else {})}))
        return True

    def _resolve(self, reg: Registry) -> Resolved:
        resolved = reg.resolve(self.config.ref, self.config.name)
        if resolved != self._vetted:
            check_for_use(reg, resolved, verify=self.config.verify, require_signed=self.config.require_signed)
        return resolved

    def holds_version(self) -> bool:
        """Whether the target names a version now (an environment tag may not exist yet)."""
        return self._marker() != ""

    def _unreachable(self, err: RemoteUnreachable) -> None:
        """The remote cannot be reached: keep what is served, or (nothing served yet) serve the version last
        verified here; say so once per outage."""
        where = hide_userinfo(self.config.registry)
        with self._lock:
            if self._server is None:
                try:
                    used = fallback(
                        self.config.registry,
                        self.config.ref,
                        self.config.name,
                        require_signed=self.config.require_signed,
                        cause=err,
                    )
                    with used.registry as reg:
                        server = PipelineServer(reg.materialize(used.resolved))
                    if self.prepare is not None:
                        self.prepare(server)
                    self._server, message = server, used.message
                except Exception as refused:
                    message = f"{type(refused).__name__}: {' '.join(str(refused).split())[:500]}"
            else:
                served = self._server
                message = (
                    f"registry {where} unreachable ({hide_userinfo(err.detail)}): keeping {self.program} "
                    f"{self.environment or self.config.ref} = {served.version} ({served.commit[:7]})"
                )
        if self._outage is None:
            self._outage = message
            log.warning(json.dumps({"event": "registry_unreachable", "registry": where, "message": message}))

    def _reachable(self) -> None:
        if self._outage is not None:
            self._outage = None
            where = hide_userinfo(self.config.registry)
            log.warning(json.dumps({"event": "registry_reachable", "registry": where}))

    def _marker(self) -> str:
        """What identifies the target now: the environment tag's value (one cheap ref read, or one `git ls-remote`
        for a remote registry), or the fixed ref itself."""
        if self.environment is None:
            return self.config.ref
        ref = tag_ref(self.program, self.environment)
        if self._probe.remote is not None:
            return self._probe.remote_refs(ref).get(ref, "")
        return self._probe.run("for-each-ref", "--format=%(objectname)", ref).strip()

    def _refuse(self, marker: str, err: Exception) -> None:
        detail = " ".join(str(err).split())[:500]
        self._problem = {"tag": marker, "error": f"{type(err).__name__}: {detail}"}
        log.warning(json.dumps({"event": "not_swapped_in", "environment": self.environment, **self._problem}))


def _what(resolved: Resolved) -> dict[str, Any]:
    return {k: v for k, v in asdict(resolved).items() if v is not None}


def build_app(config: ServeConfig, *, vetted: Resolved | None = None) -> Any:
    """The app for one process: a backend that loads its first version in the background, so /ready starts at 503.
    `vetted`: the version the caller has resolved and checked for use (see FollowingBackend)."""
    configure_access_log()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    main = FollowingBackend(config, vetted=vetted)
    backend: FollowingBackend | SplitBackend = main
    split = config.canary
    if split is not None:  # a second follower, for the canary's environment (canary.py)
        side = replace(config, ref=split.environment, name=main.program)
        canary = FollowingBackend(side, follows=(main.program, split.environment))
        backend = SplitBackend(main, canary, split.percent, split.key_header)
    grpc_server = None
    if config.grpc_port is not None:
        from .grpc_api import GrpcServer

        grpc_server = GrpcServer(
            backend.program,
            backend,
            threads=config.threads,
            max_body_bytes=config.limits.max_body_bytes,
            max_batch=config.limits.max_batch,
        )
        backend.prepare = grpc_server.prepare
        grpc_server.start(config.grpc_host, config.grpc_port, reuse_port=config.grpc_reuse_port)
    backend.start()
    app = create_app(
        backend,
        threads=config.threads,
        max_body_bytes=config.limits.max_body_bytes,
        max_batch=config.limits.max_batch,
        body_timeout=config.limits.body_timeout,
        metrics_public=config.metrics_public,
    )
    app.router.on_shutdown.append(backend.stop)
    if grpc_server is not None:
        app.router.on_shutdown.append(grpc_server.stop)
    return app


def worker_app() -> Any:
    """uvicorn's factory in each worker process (`--workers N`): every worker follows the tag by itself."""
    return build_app(ServeConfig.from_json(os.environ[CONFIG_ENV]))


def serve(config: ServeConfig, *, host: str, port: int, workers: int, vetted: Resolved | None = None) -> None:
    """Run the server (uvicorn) until stopped; `vetted` as in build_app (a worker process checks for itself)."""
    import uvicorn

    options = uvicorn_options(limits=ConnectionLimits(config.limits.max_connections, config.limits.header_timeout))
    if config.grpc_port is not None:
        _require_grpc()  # the port itself is checked by the command, before the program loads
        config = replace(config, grpc_host=host, grpc_reuse_port=workers > 1)
    if workers > 1:
        os.environ[CONFIG_ENV] = config.to_json()
        with _multiprocess_metrics():
            uvicorn.run(
                "dspy_registry.serve:worker_app", factory=True, host=host, port=port, workers=workers, **options
            )
    else:
        uvicorn.run(build_app(config, vetted=vetted), host=host, port=port, **options)


@contextmanager
def _multiprocess_metrics() -> Iterator[None]:
    """Workers count into files in a folder this server owns (prometheus_client's multiprocess mode), so /metrics
    sums every worker whichever answers the scrape; a PROMETHEUS_MULTIPROC_DIR already set is used as it is."""
    if os.environ.get(MULTIPROC_ENV):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="dspyreg-metrics-") as folder:
        os.environ[MULTIPROC_ENV] = folder
        try:
            yield
        finally:
            del os.environ[MULTIPROC_ENV]


def check_free(host: str, port: int, what: str = "gRPC", option: str = "--grpc-port") -> None:
    problem = port_problem(host, port)
    if problem is not None:
        raise RegistryError(
            f"cannot serve {what} on {host}:{port}: {problem}: stop what uses it or choose another {option}"
        )


def _require_grpc() -> None:
    import importlib.util

    missing = [
        m for m in ("grpc", "grpc_tools", "grpc_health", "grpc_reflection") if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise RegistryError(
            f"--grpc-port needs {', '.join(missing)}: pip install 'dspy-registry[serve]' (grpcio, grpcio-tools, "
            "grpcio-health-checking, grpcio-reflection)"
        )
