"""The commands that show a registry in a browser: `ui` (a live read-only web view) and `site` (the same pages as
static files). Both render ui/pages.py; neither imports dspy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .cli_common import RegistryOpt, TracebackOpt, console_err, funnel, open_registry


def ui(
    registry: RegistryOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free port).")] = 8300,
    traceback: TracebackOpt = False,
) -> None:
    """Browse the registry in a web browser: programs, versions, environments, prompts, diffs, the journal and
    charts of score, latency and cost across versions (read-only; see docs/ui.md)."""
    with funnel(traceback):
        from .errors import RegistryError

        try:
            import jinja2  # noqa: F401
            import uvicorn
        except ImportError:
            raise RegistryError("`dspyreg ui` needs the ui extra: pip install 'dspy-registry[ui]'") from None

        from .runtime.server_limits import port_problem
        from .ui.app import create_app

        problem = port_problem(host, port)  # a bad --host or a taken port: one line, not uvicorn's exit 3
        if problem is not None:
            raise RegistryError(f"cannot serve the ui on {host}:{port}: {problem}: choose another --port")
        with open_registry(registry) as reg:
            console_err().print(f"dspyreg ui for {reg.location} on http://{host}:{port}/ (Ctrl-C to stop)")
            uvicorn.run(create_app(reg), host=host, port=port, log_level="warning")


def site(
    dest: Annotated[Path, typer.Argument(metavar="DIR", help="Folder to write the site to (new, empty, or a site).")],
    registry: RegistryOpt = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Write into a non-empty folder that holds no earlier site (only the site's files change)."
        ),
    ] = False,
    traceback: TracebackOpt = False,
) -> None:
    """Write the ui's pages as a static site (relative links: open DIR/index.html, or publish DIR to the git host's
    pages, as the registry template's workflow does)."""
    with funnel(traceback):
        from .ui.site import build_site

        with open_registry(registry) as reg:
            result = build_site(reg, dest, force=force)
        console_err().print(f"Wrote {len(result.pages)} pages to {dest} (open {dest / 'index.html'})")
