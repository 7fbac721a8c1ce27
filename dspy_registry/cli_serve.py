"""The commands that take a version out to run: export (a deployment folder), serve (HTTP and gRPC) and proto."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_common import (
    JsonOpt,
    NameOpt,
    NoVerifyOpt,
    RegistryOpt,
    RequireSignedOpt,
    TracebackOpt,
    console_err,
    console_out,
    funnel,
    one_line,
    open_registry,
    print_json,
    resolve_checked,
)
from .errors import RegistryError, RemoteUnreachable
from .registry import default_registry


def export(
    ref: Annotated[str, typer.Argument(metavar="REF", help="The version to export: v1.1, prod, qa/prod...")],
    dest: Annotated[
        Path, typer.Argument(metavar="DEST", help="Folder to write the deployment bundle to (new or empty).")
    ],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Export into a folder that is not empty: replace the files of the bundle (and of the previous "
            "export), keep every other file.",
        ),
    ] = False,
    k8s: Annotated[
        bool,
        typer.Option(
            "--k8s",
            help="Also write k8s/: a Deployment of `dspyreg serve` replicas that follow an environment on the remote "
            "registry, a Service, a kustomization.yaml and the image's Dockerfile (docs/deployment.md).",
        ),
    ] = False,
    k8s_registry: Annotated[
        Optional[str],
        typer.Option(
            "--k8s-registry",
            help="Git URL the pods follow (no credentials in it) [default: --registry, when it is a URL].",
        ),
    ] = None,
    k8s_env: Annotated[
        Optional[str],
        typer.Option("--k8s-env", help="Environment the pods follow [default: REF's environment, else prod]."),
    ] = None,
    image: Annotated[
        Optional[str],
        typer.Option(
            "--image", help="Image the pods run, built from k8s/Dockerfile [default: <program>-serve:<version>]."
        ),
    ] = None,
    k8s_replicas: Annotated[int, typer.Option("--k8s-replicas", help="Replicas (the minimum with an autoscaler).")] = 2,
    k8s_max_replicas: Annotated[
        Optional[int],
        typer.Option("--k8s-max-replicas", help="Also write a HorizontalPodAutoscaler scaling up to this many."),
    ] = None,
    k8s_poll_seconds: Annotated[
        float, typer.Option("--k8s-poll-seconds", help="How often each replica looks at the environment tag.")
    ] = 5.0,
    k8s_secret: Annotated[
        Optional[str],
        typer.Option(
            "--k8s-secret",
            help="Secret holding api-token and lm-api-key, referenced by name [default: <program>-dspyreg].",
        ),
    ] = None,
    no_verify: NoVerifyOpt = False,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Write a version's deployment bundle: state, prompts, code, config, API server, Docker files, guide."""
    with funnel(traceback), open_registry(registry) as reg:
        k8s_given = {
            "--k8s-registry": k8s_registry,
            "--k8s-env": k8s_env,
            "--image": image,
            "--k8s-max-replicas": k8s_max_replicas,
            "--k8s-secret": k8s_secret,
        }
        if not k8s and any(value is not None for value in k8s_given.values()):
            given = ", ".join(option for option, value in k8s_given.items() if value is not None)
            raise RegistryError(f"{given} only make sense with --k8s")
        resolved = resolve_checked(reg, ref, name, no_verify)
        options = None
        if k8s:
            from .k8s import k8s_options

            environment = k8s_env or resolved.environment or reg.production
            if environment not in reg.config.environments:
                raise RegistryError(
                    f"--k8s-env {environment!r} is not one of this registry's environments: "
                    f"{', '.join(reg.config.environments)}"
                )
            options = k8s_options(
                program=resolved.program,
                version=resolved.version,
                registry_location=reg.location,
                registry_url=k8s_registry,
                environment=environment,
                image=image,
                replicas=k8s_replicas,
                max_replicas=k8s_max_replicas,
                poll_seconds=k8s_poll_seconds,
                secret=k8s_secret,
            )
        result = reg.export(resolved, dest, force=force, k8s=options)
        folder, files = result.path, list(result.files)
        if json_out:
            print_json(
                {
                    "name": resolved.program,
                    "version": resolved.version,
                    "commit": resolved.commit,
                    "path": str(folder),
                    "files": files,
                    "replaced": list(result.replaced),
                    "removed": list(result.removed),
                }
            )
        else:
            from .render import export_summary

            console_out().print(export_summary(resolved.program, resolved.version, result), soft_wrap=True)


def serve(
    ref: Annotated[
        Optional[str],
        typer.Argument(metavar="[REF]", help="Environment to follow, or a fixed version [default: prod]."),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free port).")] = 8000,
    poll_seconds: Annotated[
        float, typer.Option("--poll-seconds", help="How often to look at the environment tag.")
    ] = 2.0,
    workers: Annotated[int, typer.Option("--workers", help="Server processes; each follows the tag.")] = 1,
    threads: Annotated[int, typer.Option("--threads", help="Program calls in parallel per process.")] = 64,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", help="Larger request bodies get 413.")] = 1 << 20,
    max_batch: Annotated[
        int,
        typer.Option(
            "--max-batch",
            envvar="DSPYREG_MAX_BATCH",
            help="Inputs per batch request; more get 413 (gRPC: RESOURCE_EXHAUSTED) before any runs.",
        ),
    ] = 64,
    max_connections: Annotated[
        int,
        typer.Option(
            "--max-connections",
            envvar="DSPYREG_MAX_CONNECTIONS",
            help="Open HTTP connections per process; more get 503 and are closed.",
        ),
    ] = 512,
    header_timeout: Annotated[
        float,
        typer.Option(
            "--header-timeout",
            envvar="DSPYREG_HEADER_TIMEOUT",
            help="Seconds for a request's line and headers to arrive; slower connections are closed.",
        ),
    ] = 10.0,
    body_timeout: Annotated[
        float,
        typer.Option(
            "--body-timeout",
            envvar="DSPYREG_BODY_TIMEOUT",
            help="Seconds for a request body to arrive; slower get 408.",
        ),
    ] = 30.0,
    grpc_port: Annotated[
        Optional[int],
        typer.Option(
            "--grpc-port",
            help="Also serve gRPC on this port (same host, program and version; the .proto is `dspyreg proto REF`).",
        ),
    ] = None,
    metrics_public: Annotated[
        bool,
        typer.Option(
            "--metrics-public",
            help="Answer GET /metrics without the bearer token (for a Prometheus scrape); other paths still need it.",
        ),
    ] = False,
    canary: Annotated[
        Optional[str],
        typer.Option(
            "--canary",
            metavar="ENV=PERCENT",
            help="Send PERCENT of the calls to the version another environment holds (e.g. staging=10), sticky per "
            "caller with --canary-header; each side follows its own environment (docs/deployment.md).",
        ),
    ] = None,
    canary_key_header: Annotated[
        str,
        typer.Option(
            "--canary-header",
            help="Header (gRPC: metadata, lowercase) whose value keeps a caller on one side of --canary.",
        ),
    ] = "X-Dspyreg-Key",
    no_verify: NoVerifyOpt = False,
    require_signed: RequireSignedOpt = False,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    traceback: TracebackOpt = False,
) -> None:
    """Serve a program over HTTP (and gRPC with --grpc-port); when REF is an environment, follow it and swap
    versions without dropping requests."""
    with funnel(traceback):
        if workers < 1 or threads < 1 or not (0 < poll_seconds < math.inf) or max_body_bytes < 1:
            raise RegistryError(
                "--workers, --threads, --poll-seconds and --max-body-bytes must be positive (and finite)"
            )
        if max_batch < 1 or max_connections < 1 or not (0 < header_timeout < math.inf and 0 < body_timeout < math.inf):
            raise RegistryError(
                "--max-batch, --max-connections, --header-timeout and --body-timeout must be positive (and finite)"
            )
        if grpc_port is not None and not (0 < grpc_port < 65536 and grpc_port != port):
            raise RegistryError(f"--grpc-port {grpc_port} must be a port from 1 to 65535 other than --port {port}")
        _require_serve_extra()
        split = vetted = None
        try:
            with open_registry(registry) as reg:
                target = ref or reg.production
                resolved = vetted = resolve_checked(reg, target, name, no_verify, require_signed=require_signed)
                # Nothing to serve when the policy refuses the first version: one line, exit 1 (the server logs drift).
                reg.check_drift(reg.materialize(resolved), resolved, report=lambda message: None)
                location = reg.location
                if canary is not None:
                    from .canary import parse_canary

                    split = parse_canary(canary, reg.config.environments, resolved.environment, canary_key_header)
        except RemoteUnreachable as err:  # a git host outage never takes prod down: the last verified version
            from .last_good import fallback

            location = registry or default_registry()
            used = fallback(location, ref, name, require_signed=require_signed, cause=err)
            with used.registry as cached:
                target, resolved = used.ref, used.resolved
                if canary is not None:
                    from .canary import parse_canary

                    environments = cached.config.environments
                    split = parse_canary(canary, environments, resolved.environment, canary_key_header)
            console_err().print(f"[yellow]warning:[/yellow] {one_line(used.message)}", soft_wrap=True)
        from .runtime.inference import check_lm_environment
        from .serve import Limits, ServeConfig, check_free
        from .serve import serve as run_server

        check_lm_environment()  # a server that cannot make its LM would run without ever swapping a version in
        check_free(host, port, "HTTP", "--port")  # a bad --host or a taken port: one line, not uvicorn's exit 3
        if grpc_port is not None:
            check_free(host, grpc_port)  # before the program loads, not after

        limits = Limits(
            max_body_bytes=max_body_bytes,
            max_batch=max_batch,
            body_timeout=body_timeout,
            max_connections=max_connections,
            header_timeout=header_timeout,
        )
        config = ServeConfig(
            registry=location,
            ref=target,
            name=resolved.program,
            poll_seconds=poll_seconds,
            verify=not no_verify,
            threads=threads,
            limits=limits,
            grpc_port=grpc_port,
            require_signed=require_signed,
            metrics_public=metrics_public,
            canary=split,
        )
        following = (
            f"following {resolved.program}/{resolved.environment} every {poll_seconds:g} s"
            if resolved.environment
            else "fixed version"
        )
        grpc = f" and gRPC on {host}:{grpc_port}" if grpc_port is not None else ""
        if split is not None:
            following += f"; {split.percent:g}% of calls to {resolved.program}/{split.environment}"
        console_err().print(
            f"Serving {resolved.program} {resolved.version} on http://{host}:{port}{grpc} "
            f"({following}, {workers} worker(s))"
        )
        run_server(config, host=host, port=port, workers=workers, vetted=vetted)


def _require_serve_extra() -> None:
    """fastapi and uvicorn come with the `serve` extra: say how to get them rather than ModuleNotFoundError."""
    for module in ("fastapi", "uvicorn"):
        try:
            __import__(module)
        except ImportError as err:
            raise RegistryError(
                f"`dspyreg serve` needs {module}, which does not import here ({type(err).__name__}): "
                "pip install 'dspy-registry[serve]'"
            ) from None


def proto(
    ref: Annotated[str, typer.Argument(metavar="REF", help="The version: v1.1, prod, qa/prod...")],
    no_verify: NoVerifyOpt = False,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    traceback: TracebackOpt = False,
) -> None:
    """Print the typed gRPC .proto of a version (what `export` writes and `serve --grpc-port` serves)."""
    with funnel(traceback), open_registry(registry) as reg:
        resolved = resolve_checked(reg, ref, name, no_verify)
        sys.stdout.write(reg.proto(resolved))
