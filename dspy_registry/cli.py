"""The `dspyreg` command: the typer app, its usage errors, and every command registered in the order `dspyreg --help`
lists them. Each command parses, calls one Registry method, renders; the commands live by concern in cli_write.py
(init, publish, promote, rollback), cli_read.py (sync, list, show, log, diff, verify), cli_quality.py (eval, bench),
cli_serve.py (export, serve, proto) and cli_ui.py (ui, site); what they share (options, consoles, the one error
funnel) in cli_common.py.

Exit codes: 0 ok, 1 a problem the user can fix, 2 unexpected (rerun with --traceback), 3 a concurrent writer won,
130 interrupted.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import import_module
from typing import Annotated, Any

import typer
import typer.core
from typer.core import TyperGroup

from .cli_common import console_err, one_line

# click's UsageError, wherever this typer takes click from (typer 0.28 vendors it as typer._click).
_UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _BadUsage(_UsageError):  # type: ignore[valid-type,misc]
    """A command line click cannot parse (unknown option, bad value, missing argument): bad input like any other,
    so one red line and exit 1 rather than click's usage block and exit 2."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        hint = f" (see `{self.ctx.command_path} --help`)" if self.ctx is not None else ""
        console_err().print(f"[red]error:[/red] {one_line(self.format_message())}{hint}", markup=True, highlight=False)


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


def _print_version(value: bool) -> None:
    if value:
        from .version import __version__

        sys.stdout.write(f"dspyreg {__version__}\n")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print dspyreg's version and exit."),
    ] = False,
) -> None:
    """Version, diff, promote, roll back and serve optimized DSPy programs from a git artifact registry."""


# Every command, in the order `dspyreg --help` and docs/cli.md list them, with the module and function it lives in.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("init", "cli_write", "init"),
    ("git-setup", "cli_write", "git_setup"),
    ("sync", "cli_read", "sync"),
    ("publish", "cli_write", "publish"),
    ("list", "cli_read", "list_"),
    ("show", "cli_read", "show"),
    ("log", "cli_read", "log"),
    ("diff", "cli_read", "diff"),
    ("textconv", "cli_read", "textconv"),
    ("promote", "cli_write", "promote"),
    ("rollback", "cli_write", "rollback"),
    ("unassign", "cli_write", "unassign"),
    ("yank", "cli_write", "yank"),
    ("unyank", "cli_write", "unyank"),
    ("approve", "cli_write", "approve"),
    ("eval", "cli_quality", "eval_"),
    ("bench", "cli_quality", "bench"),
    ("export", "cli_serve", "export"),
    ("verify", "cli_read", "verify"),
    ("serve", "cli_serve", "serve"),
    ("proto", "cli_serve", "proto"),
    ("ui", "cli_ui", "ui"),
    ("site", "cli_ui", "site"),
)


def make_app(names: Sequence[str] | None = None) -> typer.Typer:
    """The typer app with every command, or only the commands `names` (in the order of COMMANDS): the modules of
    the others are not imported and their click commands are not built."""
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
    app.callback()(_root)
    for name, module, function in COMMANDS:
        if names is None or name in names:
            app.command(name, cls=_Command)(getattr(import_module(f"{__package__}.{module}"), function))
    return app


_full_app: typer.Typer | None = None


def __getattr__(name: str) -> Any:
    # `from dspy_registry.cli import app`: the whole app, built on first use (main() builds only what it runs).
    global _full_app
    if name == "app":
        if _full_app is None:
            _full_app = make_app()
        return _full_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    # `dspyreg <command> ...` runs one command: the app holds only it, so a read or a move imports and builds only
    # its own module (0.1 s budget, docs/performance.md). Anything else (help, --version, a typo) gets every command.
    args = sys.argv[1:2]
    known = {name for name, _, _ in COMMANDS}
    make_app(args if args and args[0] in known else None)()


if __name__ == "__main__":
    main()
