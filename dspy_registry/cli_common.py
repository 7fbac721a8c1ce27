"""What every `dspyreg` command shares: the common options, the consoles and JSON output, the one error funnel
(RegistryError -> one red line and its exit code), and opening the registry a command names.

Exit codes: 0 ok, 1 a problem the user can fix, 2 unexpected (rerun with --traceback), 3 a concurrent writer won,
130 interrupted.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Optional

import typer

from .errors import RegistryError
from .registry import Registry, default_registry

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

NoVerifyOpt = Annotated[
    bool, typer.Option("--no-verify", help="Use the version even if it fails verification (prints a warning).")
]


def console_out() -> Any:
    import shutil

    from rich.console import Console

    # Piped output is read by people too (CI logs): give tables room instead of rich's 80-column default.
    width = None if sys.stdout.isatty() else max(shutil.get_terminal_size((120, 24)).columns, 120)
    return Console(highlight=False, width=width)


def print_fitted(make: Any) -> None:
    """Print what `make(width)` builds for this terminal's width; piped output without trailing padding."""
    console = console_out()
    if sys.stdout.isatty():
        console.print(make(console.width))
        return
    with console.capture() as captured:
        console.print(make(console.width))
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def console_err() -> Any:
    from rich.console import Console

    # One message, one line: never wrap errors and warnings at the terminal width.
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(value: Any) -> None:
    sys.stdout.write(_json_text(value) + "\n")


def print_json_list(items: Iterable[Any]) -> None:
    """The JSON list of `items` as print_json prints it, byte for byte, each item written (and flushed) as it comes:
    one document, never held whole."""
    opening = "[\n"
    for item in items:
        sys.stdout.write(opening + textwrap.indent(_json_text(item), "  "))
        sys.stdout.flush()
        opening = ",\n"
    sys.stdout.write("[]\n" if opening == "[\n" else "\n]\n")


def _json_text(value: Any) -> str:
    from .saved_state import printable_json

    # Strict JSON out: NaN and Infinity read from a hand-made state are printed by name, as strings.
    return json.dumps(printable_json(value), indent=2, ensure_ascii=False, allow_nan=False)


@contextmanager
def funnel(traceback: bool) -> Iterator[None]:
    """The one place where errors become a red line and an exit code.

    Ctrl-C before a write's ref transaction cancels the command (nothing landed); after the transaction started it
    is held, so the command reports what landed and exits 0 (see interrupts.py)."""
    from . import interrupts

    try:
        with interrupts.hold_after_commit():
            yield
            if interrupts.committed_then_interrupted():
                console_err().print(
                    "[yellow]interrupted[/yellow] after the change above landed: it stands", soft_wrap=True
                )
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        console_err().print("[red]interrupted:[/red] nothing was changed")
        raise typer.Exit(130) from None
    except Exception as err:
        if traceback:
            raise
        if isinstance(err, (RegistryError, *_runtime_config_error())):
            # A DSPYREG_LM_* setting the runtime cannot use raises the runtime's own type (it imports nothing of ours).
            console_err().print(f"[red]error:[/red] {one_line(str(err))}", markup=True, highlight=False)
            raise typer.Exit(getattr(err, "exit_code", 1)) from None
        console_err().print(
            f"[red]unexpected error:[/red] {type(err).__name__}: {one_line(str(err))} (rerun with --traceback)"
        )
        raise typer.Exit(2) from None


def _runtime_config_error() -> tuple[type[Exception], ...]:
    # Only once the runtime is imported can it have raised: reading sys.modules keeps read commands light.
    inference = sys.modules.get(f"{__package__}.runtime.inference")
    return (inference.ConfigError,) if inference is not None else ()


def one_line(text: str) -> str:
    from rich.markup import escape

    from .gitremote import hide_userinfo

    return escape(hide_userinfo(" ".join(text.split())))


def open_registry(registry: str | None) -> Registry:
    return Registry.open(registry or default_registry())


def resolve_checked(reg: Registry, ref: str, name: str | None, no_verify: bool, *, require_signed: bool = False) -> Any:
    warn_unverified(no_verify, ref)
    return reg.checked(ref, name, verify=not no_verify, require_signed=require_signed)


def warn_unverified(no_verify: bool, ref: str) -> None:
    if no_verify:
        console_err().print(f"[yellow]warning:[/yellow] not verifying {one_line(ref)} (--no-verify)")
