"""The `dspyreg` command: each command parses, calls one Registry method, renders; one error funnel.

Exit codes: 0 ok, 1 a problem the user can fix, 2 unexpected (rerun with --traceback), 3 a concurrent writer won,
130 interrupted.
"""

from __future__ import annotations

import inspect
import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import typer.core
from typer.core import TyperGroup

from .errors import RegistryError
from .registry import Registry, default_registry
from .sides import diff_files, is_state_path

# click's UsageError, wherever this typer takes click from (typer 0.28 vendors it as typer._click).
_UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _BadUsage(_UsageError):  # type: ignore[valid-type,misc]
    """A command line click cannot parse (unknown option, bad value, missing argument): bad input like any other,
    so one red line and exit 1 rather than click's usage block and exit 2."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        hint = f" (see `{self.ctx.command_path} --help`)" if self.ctx is not None else ""
        _err().print(f"[red]error:[/red] {_one_line(self.format_message())}{hint}", markup=True, highlight=False)


@contextmanager
def _usage_in_one_line() -> Iterator[None]:
    try:
        yield
    except _UsageError as err:
        if isinstance(err, _BadUsage) or type(err).__name__ == "NoArgsIsHelpError":  # `dspyreg` alone shows help
            raise
        raise _BadUsage(err.format_message(), err.ctx) from None  # type: ignore[attr-defined]


class _Commands(TyperGroup):
    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _usage_in_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _usage_in_one_line():
            return super().invoke(ctx)


class _Command(typer.core.TyperCommand):
    """Usage lines as people write them (`publish [OPTIONS] PROGRAM_SPEC`): typer wraps required arguments in
    braces, which read like a shell brace expansion."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]

    def get_short_help_str(self, limit: int = 45) -> str:
        # The command list in `dspyreg --help` shows each summary whole (wrapped), never cut at 45 characters.
        first = inspect.cleandoc(self.short_help or self.help or "").split("\n\n")[0]
        return " ".join(first.split())


app = typer.Typer(
    name="dspyreg",
    cls=_Commands,
    help="Version, diff, promote, roll back and serve optimized DSPy programs from a git artifact registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from .version import __version__

        sys.stdout.write(f"dspyreg {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print dspyreg's version and exit."),
    ] = False,
) -> None:
    """Version, diff, promote, roll back and serve optimized DSPy programs from a git artifact registry."""


RegistryOpt = Annotated[
    Optional[str],
    typer.Option(
        "--registry",
        envvar="DSPYREG_REGISTRY",
        show_envvar=True,
        help="Registry path or git URL [default: ./registry].",
    ),
]
NameOpt = Annotated[
    Optional[str], typer.Option("--name", help="Program name (needed when the registry holds several).")
]
TracebackOpt = Annotated[bool, typer.Option("--traceback", help="Show the full traceback of an unexpected error.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why: recorded in the tag message and the journal.")]
SignOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--sign/--no-sign",
        help="Sign the tags written with git's user.signingkey (gpg.format=ssh) [default: registry.toml's "
        "[signing] sign, or git's tag.gpgSign].",
    ),
]
RequireSignedOpt = Annotated[
    bool,
    typer.Option(
        "--require-signed",
        help="Refuse version and environment tags not signed by a key registry.toml's [signing] allows for them.",
    ),
]


class DiffFormat(str, Enum):
    text = "text"
    markdown = "markdown"
    json = "json"


def _out() -> Any:
    import shutil

    from rich.console import Console

    # Piped output is read by people too (CI logs): give tables room instead of rich's 80-column default.
    width = None if sys.stdout.isatty() else max(shutil.get_terminal_size((120, 24)).columns, 120)
    return Console(highlight=False, width=width)


def _show(make: Any) -> None:
    """Print what `make(width)` builds for this terminal's width; piped output without trailing padding."""
    console = _out()
    if sys.stdout.isatty():
        console.print(make(console.width))
        return
    with console.capture() as captured:
        console.print(make(console.width))
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def _err() -> Any:
    from rich.console import Console

    # One message, one line: never wrap errors and warnings at the terminal width.
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _print_json(value: Any) -> None:
    from .saved_state import printable_json

    # Strict JSON out: NaN and Infinity read from a hand-made state are printed by name, as strings.
    sys.stdout.write(json.dumps(printable_json(value), indent=2, ensure_ascii=False, allow_nan=False) + "\n")


@contextmanager
def _funnel(traceback: bool) -> Iterator[None]:
    """The one place where errors become a red line and an exit code.

    Ctrl-C before a write's ref transaction cancels the command (nothing landed); after the transaction started it
    is held, so the command reports what landed and exits 0 (see interrupts.py)."""
    from . import interrupts

    try:
        with interrupts.hold_after_commit():
            yield
            if interrupts.committed_then_interrupted():
                _err().print("[yellow]interrupted[/yellow] after the change above landed: it stands", soft_wrap=True)
    except typer.Exit:
        raise
    except RegistryError as err:
        if traceback:
            raise
        _err().print(f"[red]error:[/red] {_one_line(str(err))}", markup=True, highlight=False)
        raise typer.Exit(err.exit_code) from None
    except _runtime_config_error() as err:
        # A DSPYREG_LM_* setting the runtime cannot use: it raises its own type (it imports nothing of ours).
        if traceback:
            raise
        _err().print(f"[red]error:[/red] {_one_line(str(err))}", markup=True, highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        _err().print("[red]interrupted:[/red] nothing was changed")
        raise typer.Exit(130) from None
    except Exception as err:
        if traceback:
            raise
        _err().print(
            f"[red]unexpected error:[/red] {type(err).__name__}: {_one_line(str(err))} (rerun with --traceback)"
        )
        raise typer.Exit(2) from None


def _runtime_config_error() -> tuple[type[Exception], ...]:
    # Only once the runtime is imported can it have raised: reading sys.modules keeps read commands light.
    inference = sys.modules.get(f"{__package__}.runtime.inference")
    return (inference.ConfigError,) if inference is not None else ()


def _one_line(text: str) -> str:
    from rich.markup import escape

    return escape(" ".join(text.split()))


def _open(registry: str | None) -> Registry:
    return Registry.open(registry or default_registry())


@app.command(cls=_Command)
def init(
    path: Annotated[
        Optional[str], typer.Argument(metavar="[PATH]", help="Where to create the registry [default: --registry].")
    ] = None,
    registry: RegistryOpt = None,
    bare: Annotated[
        bool, typer.Option("--bare/--worktree", help="Bare repository (default) or one with a work tree.")
    ] = True,
    traceback: TracebackOpt = False,
) -> None:
    """Create a new registry from the registry template."""
    with _funnel(traceback):
        where = path or registry or default_registry()
        with Registry.init(where, bare=bare):
            pass
        _out().print(f"Initialized dspyreg registry in {where}")


@app.command(cls=_Command)
def sync(
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Bring the local cache of a remote registry up to date (every command also does this for the refs it reads)."""
    with _funnel(traceback), _open(registry) as reg:
        remote, versions = reg.store.remote, reg.versions()
        if json_out:
            _print_json(
                {
                    "registry": reg.location,
                    "remote": remote,
                    "cache": str(reg.store.git_dir),
                    "programs": reg.programs(),
                    "versions": len(versions),
                }
            )
        elif remote is None:
            _out().print(f"{reg.location} is a local registry: nothing to sync")
        else:
            _out().print(
                f"Synced {remote} into {reg.store.git_dir}: {len(reg.programs())} programs, {len(versions)} versions"
            )


@app.command(cls=_Command)
def publish(
    program_spec: Annotated[
        str,
        typer.Argument(
            metavar="PROGRAM_SPEC", help="path/to/file.py:Attr or package.module:Attr (a dspy.Module class or factory)."
        ),
    ],
    state: Annotated[Path, typer.Option("--state", help="The JSON state that program.save('x.json') wrote.")],
    version: Annotated[str, typer.Option("--version", help="New version, e.g. v1.1 (immutable once published).")],
    name: Annotated[str, typer.Option("--name", help="Program name, e.g. qa.")],
    optimizer: Annotated[
        Optional[str], typer.Option("--optimizer", help="Optimizer that produced the state, e.g. MIPROv2.")
    ] = None,
    dev_score: Annotated[
        Optional[float], typer.Option("--dev-score", help="Dev-set score as a fraction in [0, 1].")
    ] = None,
    trainset_size: Annotated[
        Optional[int], typer.Option("--trainset-size", help="Number of training examples.")
    ] = None,
    notes: Annotated[str, typer.Option("--notes", help="Free text kept in the manifest and tag.")] = "",
    lm: Annotated[
        Optional[str], typer.Option("--lm", help="LM model the version is meant for, e.g. openai/gpt-4o-mini.")
    ] = None,
    record_example: Annotated[
        bool,
        typer.Option(
            "--record-example",
            help="Run the program once on its example input with the LM (--lm, DSPYREG_LM_*) "
            "and record its output in examples/output.json.",
        ),
    ] = False,
    sign: SignOpt = None,
    allow_unrendered_demos: Annotated[
        bool,
        typer.Option(
            "--allow-unrendered-demos",
            help="Publish even if some demos would not be rendered by DSPy (their keys do not match the "
            "signature's fields), with a warning; refused by default.",
        ),
    ] = False,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Publish an optimized program state as a new immutable version."""
    with _funnel(traceback):
        from .publishing import publish_inputs
        from .state import read_state_file

        _check_text_options({"--notes": notes, "--optimizer": optimizer, "--lm": lm})
        with _open(registry) as reg:
            # Cheap checks first: a bad state or version fails before the program is imported.
            state_dict = read_state_file(state)
            reg.check_new_version(name, version)
            no_lm = "--record-example needs an LM: pass --lm MODEL or set DSPYREG_LM_MODEL"
            inputs = publish_inputs(program_spec, lm=lm, record_example=record_example, no_lm=no_lm)
            result = reg.publish(
                inputs.source,
                state_dict,
                name=name,
                version=version,
                optimizer=optimizer,
                trainset_size=trainset_size,
                dev_score=dev_score,
                notes=notes,
                lm=inputs.lm,
                origin=str(state),
                record_with=inputs.recorder,
                sign=sign,
                allow_unrendered_demos=allow_unrendered_demos,
            )
        for warning in result.warnings:
            _err().print(f"[yellow]warning:[/yellow] {_one_line(warning)}")
        if json_out:
            _print_json(
                {
                    "name": result.name,
                    "version": result.version,
                    "commit": result.commit,
                    "files": list(result.files),
                    "warnings": list(result.warnings),
                }
            )
        else:
            from .render import publish_summary

            _out().print(publish_summary(result))


def _check_text_options(options: dict[str, str | None]) -> None:
    """Text that goes into git and TOML must be valid Unicode: bytes that are not UTF-8 reach Python's argv as lone
    surrogates, which no file or commit can hold."""
    from .saved_state import invalid_text

    for option, value in options.items():
        if value is not None and invalid_text(value):
            raise RegistryError(f"{option} is not valid Unicode (bytes that are not UTF-8?): pass UTF-8 text")


PEOPLE_ROWS = 50


@app.command("list", cls=_Command)
def list_(
    program: Annotated[Optional[str], typer.Argument(metavar="[PROGRAM]", help="Only this program.")] = None,
    all_versions: Annotated[
        bool, typer.Option("--all", help=f"Show every version, not only the newest {PEOPLE_ROWS} (--json has all).")
    ] = False,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """List published versions and where each environment points."""
    with _funnel(traceback), _open(registry) as reg:
        versions = reg.versions(program if program is not None else name)
        if json_out:
            _print_json([v.to_json() for v in versions])
        else:
            from .render import versions_table

            _show(lambda width: versions_table(versions, limit=None if all_versions else PEOPLE_ROWS, width=width))


@app.command(cls=_Command)
def show(
    ref: Annotated[str, typer.Argument(metavar="REF", help="v1.1, qa/v1.1, prod, qa/prod or a commit sha.")],
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Show one version: manifest, environments and predictors."""
    with _funnel(traceback), _open(registry) as reg:
        detail = reg.show(ref, name)
        _warn_moved_outside(reg, ref, name)
        if json_out:
            _print_json(detail.to_json())
        else:
            from .render import detail_view

            _out().print(detail_view(detail))


def _warn_moved_outside(reg: Registry, ref: str, name: str | None) -> None:
    """An environment tag that disagrees with the journal (moved outside dspyreg) is shown with the warnings that
    `verify` would give: reading it is not trusting it. Reads two refs and one blob: no bundle is checked."""
    from .verify import verify_environments

    resolved = reg.resolve(ref, name)
    if resolved.environment is None:
        return
    for problem in verify_environments(reg, resolved.program, (resolved.environment,)):
        _err().print(f"[yellow]warning:[/yellow] {_one_line(str(problem))} (see `dspyreg verify`)")


@app.command(cls=_Command)
def log(
    program: Annotated[Optional[str], typer.Argument(metavar="[PROGRAM]", help="Only this program.")] = None,
    env: Annotated[Optional[str], typer.Option("--env", help="Only this environment.")] = None,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Show the journal: every environment move, oldest first."""
    with _funnel(traceback), _open(registry) as reg:
        entries = reg.log(program if program is not None else name, env)
        if json_out:
            _print_json([e.to_json() for e in entries])
        else:
            from .render import log_table

            _show(lambda width: log_table(entries, width=width))


@app.command(cls=_Command)
def diff(
    ref_a: Annotated[
        str, typer.Argument(metavar="REF_A", help="Old side: a registry ref or a saved state .json file.")
    ],
    ref_b: Annotated[
        str, typer.Argument(metavar="REF_B", help="New side: a registry ref or a saved state .json file.")
    ],
    output: Annotated[
        DiffFormat, typer.Option("--format", help="text (colored), markdown (PR comments) or json.")
    ] = DiffFormat.text,
    program_spec: Annotated[
        Optional[str],
        typer.Option(
            "--program", help="Program spec giving field names and types to two bare .json files (imports dspy)."
        ),
    ] = None,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Semantic diff of two versions: instructions, fields, demos, lm and metadata."""
    with _funnel(traceback):
        if is_state_path(ref_a) and is_state_path(ref_b):
            result = diff_files(ref_a, ref_b, program_spec)
        else:
            with _open(registry) as reg:
                result = reg.diff(ref_a, ref_b, name, program_spec)
        if json_out or output is DiffFormat.json:
            _print_json(result.to_json())
        elif output is DiffFormat.markdown:
            from .render import diff_markdown

            sys.stdout.write(diff_markdown(result))
        else:
            from .render import diff_view

            console = _out()
            console.print(diff_view(result, plain=console.color_system is None))


@app.command(cls=_Command)
def promote(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="A version (v1.1) or an environment (staging).")],
    to: Annotated[Optional[str], typer.Option("--to", help="Target environment [default: the next one].")] = None,
    reason: ReasonOpt = "",
    force: Annotated[
        bool, typer.Option("--force", help="Override registry.toml's gates (needs --reason; journaled).")
    ] = False,
    sign: SignOpt = None,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Point an environment at a version (prod also moves rollback), journaled atomically."""
    with _funnel(traceback), _open(registry) as reg:
        result = reg.promote(source, to, name=name, reason=reason, force=force, sign=sign)
        _moved(result, json_out, what=to or "the target environment")


@app.command(cls=_Command)
def rollback(
    env: Annotated[
        Optional[str], typer.Argument(metavar="[ENV]", help="Environment to roll back [default: prod].")
    ] = None,
    reason: ReasonOpt = "",
    sign: SignOpt = None,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Move an environment back to its previous version per the journal (repeatable)."""
    with _funnel(traceback), _open(registry) as reg:
        result = reg.rollback(env, name=name, reason=reason, sign=sign)
        _moved(result, json_out, what=env or "prod")


NoVerifyOpt = Annotated[
    bool, typer.Option("--no-verify", help="Use the version even if it fails verification (prints a warning).")
]


def _checked(reg: Registry, ref: str, name: str | None, no_verify: bool, *, require_signed: bool = False) -> Any:
    _warn_unverified(no_verify, ref)
    return reg.checked(ref, name, verify=not no_verify, require_signed=require_signed)


def _warn_unverified(no_verify: bool, ref: str) -> None:
    if no_verify:
        _err().print(f"[yellow]warning:[/yellow] not verifying {_one_line(ref)} (--no-verify)")


@app.command("eval", cls=_Command)
def eval_(
    ref: Annotated[str, typer.Argument(metavar="REF", help="The version to evaluate: v1.1, staging, qa/prod...")],
    devset: Annotated[Path, typer.Option("--devset", help="JSON lines: the program's inputs plus labels.")],
    metric: Annotated[str, typer.Option("--metric", help="path/to/metric.py:function or package.module:function.")],
    threads: Annotated[int, typer.Option("--threads", min=1, help="Examples evaluated in parallel.")] = 8,
    no_verify: NoVerifyOpt = False,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Evaluate a version on a dev set (dspy.Evaluate) and record the score on it (append-only)."""
    from .render import progress

    with _funnel(traceback), _open(registry) as reg, progress("evaluating") as start:
        _warn_unverified(no_verify, ref)
        record = reg.evaluate(ref, devset, metric, name=name, threads=threads, verify=not no_verify, progress=start)
        if json_out:
            _print_json(record.to_json())
        else:
            _out().print(
                f"Recorded {record.metric} = {record.score:.3f} on {record.n} examples ({record.lm}) for {ref}"
            )


@app.command(cls=_Command)
def bench(
    ref: Annotated[str, typer.Argument(metavar="REF", help="The version to benchmark.")],
    inputs: Annotated[Path, typer.Option("--inputs", help="JSON lines of the program's inputs (other keys ignored).")],
    n: Annotated[Optional[int], typer.Option("-n", min=1, help="Queries to send [default: one per line].")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Queries in flight at once.")] = 1,
    no_verify: NoVerifyOpt = False,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Benchmark a version's latency, tokens and cost per query (LM cache off) and record it (append-only)."""
    from .render import progress

    with _funnel(traceback), _open(registry) as reg, progress("benchmarking") as start:
        _warn_unverified(no_verify, ref)
        record = reg.bench(ref, inputs, name=name, n=n, concurrency=concurrency, verify=not no_verify, progress=start)
        if json_out:
            _print_json(record.to_json())
        else:
            # litellm knows no price for some models: say the cost is unknown rather than "$unknown per query".
            cost = "unknown" if record.cost_per_query is None else f"${record.cost_per_query:.6f}"
            _out().print(
                f"Recorded over {record.n} queries: p50 {record.p50_ms} ms, p95 {record.p95_ms} ms, "
                f"max {record.max_ms} ms; per query {record.tokens_per_query} tokens, cost {cost}"
            )


@app.command(cls=_Command)
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
    no_verify: NoVerifyOpt = False,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Write a version's deployment bundle: state, prompts, code, config, API server, Docker files, guide."""
    with _funnel(traceback), _open(registry) as reg:
        resolved = _checked(reg, ref, name, no_verify)
        result = reg.export(resolved, dest, force=force)
        folder, files = result.path, list(result.files)
        if json_out:
            _print_json(
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

            _out().print(export_summary(resolved.program, resolved.version, result), soft_wrap=True)


@app.command(cls=_Command)
def verify(
    ref: Annotated[
        Optional[str], typer.Argument(metavar="[REF]", help="One version or environment [default: every environment].")
    ] = None,
    all_versions: Annotated[bool, typer.Option("--all", help="Verify every published version.")] = False,
    require_signed: RequireSignedOpt = False,
    load: Annotated[
        bool,
        typer.Option(
            "--load",
            help="Also check that each program.json loads into its bundled code: runs that code, in a child process.",
        ),
    ] = False,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Check bundles against their manifests and environment tags against the journal, without running registry code
    (unless --load); exit 1 on any problem."""
    with _funnel(traceback), _open(registry) as reg:
        problems = reg.verify(ref, name, everything=all_versions, require_signed=require_signed, load=load)
        if json_out:
            _print_json([{"subject": p.subject, "message": p.message} for p in problems])
        else:
            for problem in problems:
                _out().print(f"[red]problem:[/red] {_one_line(str(problem))}", soft_wrap=True)
            if not problems:
                signed = "; every tag is signed by a key registry.toml allows" if require_signed else ""
                _out().print(
                    f"[green]verified:[/green] every bundle matches its manifest and every tag the journal{signed}"
                )
        if problems:
            raise typer.Exit(1)


@app.command(cls=_Command)
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
    no_verify: NoVerifyOpt = False,
    require_signed: RequireSignedOpt = False,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    traceback: TracebackOpt = False,
) -> None:
    """Serve a program over HTTP (and gRPC with --grpc-port); when REF is an environment, follow it and swap
    versions without dropping requests."""
    with _funnel(traceback):
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
        from .runtime.server_limits import port_problem

        busy = port_problem(host, port)
        if busy is not None:
            raise RegistryError(f"cannot serve on {host}:{port}: {busy}: stop what uses it or choose another --port")
        with _open(registry) as reg:
            target = ref or reg.production
            resolved = _checked(reg, target, name, no_verify, require_signed=require_signed)
            location = reg.location
        from .runtime.inference import check_lm_environment
        from .serve import ServeConfig, check_free
        from .serve import serve as run_server

        check_lm_environment()  # a server that cannot make its LM would run without ever swapping a version in
        check_free(host, port, "HTTP")  # a bad --host or a taken --port: one line now, not uvicorn's exit 3

        config = ServeConfig(
            registry=location,
            ref=target,
            name=resolved.program,
            poll_seconds=poll_seconds,
            verify=not no_verify,
            threads=threads,
            max_body_bytes=max_body_bytes,
            grpc_port=grpc_port,
            require_signed=require_signed,
            max_batch=max_batch,
            body_timeout=body_timeout,
            max_connections=max_connections,
            header_timeout=header_timeout,
        )
        following = (
            f"following {resolved.program}/{resolved.environment} every {poll_seconds:g} s"
            if resolved.environment
            else "fixed version"
        )
        grpc = f" and gRPC on {host}:{grpc_port}" if grpc_port is not None else ""
        _err().print(
            f"Serving {resolved.program} {resolved.version} on http://{host}:{port}{grpc} "
            f"({following}, {workers} worker(s))"
        )
        run_server(config, host=host, port=port, workers=workers)


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


@app.command(cls=_Command)
def proto(
    ref: Annotated[str, typer.Argument(metavar="REF", help="The version: v1.1, prod, qa/prod...")],
    no_verify: NoVerifyOpt = False,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    traceback: TracebackOpt = False,
) -> None:
    """Print the typed gRPC .proto of a version (what `export` writes and `serve --grpc-port` serves)."""
    with _funnel(traceback), _open(registry) as reg:
        resolved = _checked(reg, ref, name, no_verify)
        sys.stdout.write(reg.proto(resolved))


def _moved(result: Any, json_out: bool, *, what: str) -> None:
    if json_out:
        _print_json([e.to_json() for e in result.entries])
    else:
        from .render import move_summary

        _out().print(move_summary(result, what=what))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
