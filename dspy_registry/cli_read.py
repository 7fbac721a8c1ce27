"""The commands that read a registry (and change none): sync (the local cache of a remote registry), list, show,
log, diff, textconv and verify. None of them imports dspy, litellm or fastapi (verify without --load;
tests/test_imports.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from .cli_common import (
    JsonOpt,
    NameOpt,
    RegistryOpt,
    RequireSignedOpt,
    TracebackOpt,
    console_err,
    console_out,
    funnel,
    one_line,
    open_registry,
    print_fitted,
    print_json,
    print_json_list,
)
from .errors import InvalidName
from .gitremote import hide_userinfo
from .registry import Registry
from .sides import diff_files, is_state_path

if TYPE_CHECKING:
    from .checks import Finding
    from .verify import Problem


class DiffFormat(str, Enum):
    text = "text"
    markdown = "markdown"
    json = "json"


def sync(
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Bring the local cache of a remote registry up to date (every command also does this for the refs it reads)."""
    with funnel(traceback), open_registry(registry) as reg:
        remote, versions = reg.store.remote, reg.versions()
        if json_out:
            print_json(
                {
                    "registry": reg.location,
                    "remote": hide_userinfo(remote) if remote else remote,
                    "cache": str(reg.store.git_dir),
                    "programs": reg.programs(),
                    "versions": len(versions),
                }
            )
        elif remote is None:
            console_out().print(f"{reg.location} is a local registry: nothing to sync")
        else:
            console_out().print(
                f"Synced {hide_userinfo(remote)} into {reg.store.git_dir}: "
                f"{len(reg.programs())} programs, {len(versions)} versions"
            )


PEOPLE_ROWS = 50  # versions of one program a person sees without --all
PEOPLE_ROWS_EACH = 5  # of each program, when the list holds several


def list_(
    program: Annotated[Optional[str], typer.Argument(metavar="[PROGRAM]", help="Only this program.")] = None,
    all_versions: Annotated[
        bool,
        typer.Option(
            "--all",
            help=f"Show every version, not only the newest {PEOPLE_ROWS} of a program ({PEOPLE_ROWS_EACH} of each when "
            "several are listed) and those an environment points at (--json has all).",
        ),
    ] = False,
    yanked: Annotated[bool, typer.Option("--yanked", help="Also list yanked versions (marked).")] = False,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """List published versions and where each environment points (yanked versions only with --yanked)."""
    with funnel(traceback), open_registry(registry) as reg:
        only = program if program is not None else name
        limit = None
        if not (json_out or all_versions):
            limit = PEOPLE_ROWS if only is not None or len(reg.programs()) <= 1 else PEOPLE_ROWS_EACH
        versions = [v for v in reg.versions(only, scored=limit) if yanked or v.yanked is None]
        if json_out:
            print_json([v.to_json() for v in versions])
        else:
            from .render import versions_table

            print_fitted(lambda width: versions_table(versions, limit=limit, width=width))


def show(
    ref: Annotated[str, typer.Argument(metavar="REF", help="v1.1, qa/v1.1, prod, qa/prod or a commit sha.")],
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Show one version: manifest, environments and predictors."""
    with funnel(traceback), open_registry(registry) as reg:
        detail = reg.show(ref, name)
        _warn_moved_outside(reg, ref, name)
        if json_out:
            print_json(detail.to_json())
        else:
            from .render import detail_view

            print_fitted(lambda width: detail_view(detail))


def _warn_moved_outside(reg: Registry, ref: str, name: str | None) -> None:
    """An environment tag that disagrees with the journal (moved outside dspyreg) is shown with the warnings that
    `verify` would give: reading it is not trusting it. Reads two refs and one blob: no bundle is checked."""
    resolved = reg.resolve(ref, name)
    if resolved.environment is None:
        return
    from .verify import verify_environments

    for problem in verify_environments(reg, resolved.program, (resolved.environment,)):
        console_err().print(f"[yellow]warning:[/yellow] {one_line(str(problem))} (see `dspyreg verify`)")


LOG_ROWS = 20


def log(
    program: Annotated[Optional[str], typer.Argument(metavar="[PROGRAM]", help="Only this program.")] = None,
    env: Annotated[Optional[str], typer.Option("--env", help="Only this environment.")] = None,
    limit: Annotated[
        Optional[int],
        typer.Option("--limit", min=1, help=f"Only the newest N moves [default: {LOG_ROWS}; with --json: every move]."),
    ] = None,
    all_moves: Annotated[bool, typer.Option("--all", help="Every move of the journal (overrides --limit).")] = False,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Show the journal: the newest environment moves first (--json: oldest first, as every JSON list)."""
    with funnel(traceback), open_registry(registry) as reg:
        everything = all_moves or (json_out and limit is None)
        shown = None if everything else (limit or LOG_ROWS)
        # One more than shown says whether older moves exist, without reading the journal any further back.
        entries = reg.log(program if program is not None else name, env, limit=None if shown is None else shown + 1)
        more = shown is not None and len(entries) > shown
        if more:
            entries = entries[1:]
        if json_out:
            print_json([e.to_json() for e in entries])
        else:
            from .render import log_table

            newest_first = entries[::-1]
            print_fitted(lambda width: log_table(newest_first, width=width))
            if more:
                console_err().print(
                    f"[dim]the newest {shown} moves; older ones: --limit N or --all[/dim]", highlight=False
                )


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
    examples: Annotated[
        bool,
        typer.Option(
            "--examples",
            help="Compare the two versions' evaluations on one dev set example by example: what flipped, and the "
            "score delta with a paired bootstrap 95% interval.",
        ),
    ] = False,
    rendered: Annotated[
        bool,
        typer.Option(
            "--rendered",
            help="Diff the exact chat messages each predictor's adapter sends, message by message (imports dspy; "
            "no LM).",
        ),
    ] = False,
    input_file: Annotated[
        Optional[Path],
        typer.Option("--input", help="With --rendered: a JSON file of input values [default: examples/input.json]."),
    ] = None,
    input_json: Annotated[
        Optional[str], typer.Option("--input-json", help="With --rendered: the input values as a JSON object.")
    ] = None,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Semantic diff of two versions: instructions, fields, demos, lm and metadata."""
    if examples and (rendered or input_file is not None or input_json is not None):
        with funnel(traceback):
            raise InvalidName("--examples and --rendered are two views: give one of them")
    if examples:
        _diff_examples(ref_a, ref_b, "json" if json_out else output.value, name, registry, traceback)
        return
    with funnel(traceback):
        if rendered or input_file is not None or input_json is not None:
            _diff_rendered(ref_a, ref_b, output, input_file, input_json, name, registry, json_out)
            return
        if is_state_path(ref_a) and is_state_path(ref_b):
            result = diff_files(ref_a, ref_b, program_spec)
        else:
            with open_registry(registry) as reg:
                result = reg.diff(ref_a, ref_b, name, program_spec)
        _print_diff(result, output, json_out, "diff")


def _diff_examples(
    ref_a: str, ref_b: str, output: str, name: str | None, registry: str | None, traceback: bool
) -> None:
    """`diff --examples`: read from the two versions' evaluation records only (no dspy, no dev set needed)."""
    from .errors import InvalidName

    with funnel(traceback):
        if is_state_path(ref_a) or is_state_path(ref_b):
            raise InvalidName("--examples compares the evaluations of two registry versions; a state file has none")
        with open_registry(registry) as reg:
            comparison = reg.compare_examples(ref_a, ref_b, name)
        if output == "json":
            print_json(comparison.to_json())
        elif output == "markdown":
            from .render_examples import examples_markdown

            sys.stdout.write(examples_markdown(comparison))
        else:
            from .render_examples import examples_text

            console_out().print(examples_text(comparison), soft_wrap=True, highlight=False)


def textconv(
    file: Annotated[str, typer.Argument(metavar="FILE", help="A program.json or prompts.json (git passes a copy).")],
    traceback: TracebackOpt = False,
) -> None:
    """Print dspyreg's per-predictor view of a program.json or prompts.json: the diff driver git runs.

    Instructions, fields with their types, lm (masked as `diff` masks it) and demos as blocks, as plain lines for
    git's own diff. Any other content (not JSON, an unknown shape, a file over DSPYREG_MAX_STATE_BYTES) is printed
    unchanged, so a `git diff` never fails. `dspyreg init` and `dspyreg git-setup` set git up to run it."""
    from pathlib import Path

    from .textconv import write_textconv

    with funnel(traceback):
        write_textconv(Path(file), sys.stdout.buffer)
        sys.stdout.flush()


def _diff_rendered(
    ref_a: str,
    ref_b: str,
    output: DiffFormat,
    input_file: Path | None,
    input_json: str | None,
    name: str | None,
    registry: str | None,
    json_out: bool,
) -> None:
    from .rendered import BadInput, parse_input

    given = None
    if input_file is not None and input_json is not None:
        raise BadInput("give --input or --input-json, not both")
    if input_file is not None:
        try:
            text = input_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise BadInput(f"--input {input_file}: cannot read it ({type(err).__name__}): pass a JSON file") from None
        given = parse_input(text, f"--input {input_file}")
    elif input_json is not None:
        given = parse_input(input_json, "--input-json")
    with open_registry(registry) as reg:
        result = reg.diff_rendered(ref_a, ref_b, name, given)
    _print_diff(result, output, json_out, "rendered")


def _print_diff(result: Any, output: DiffFormat, json_out: bool, kind: str) -> None:
    """Print a diff (`kind` "diff") or a rendered-message diff ("rendered") as JSON, markdown or the rich view."""
    if json_out or output is DiffFormat.json:
        print_json(result.to_json())
        return
    from . import render_diff  # rich: only for people

    if output is DiffFormat.markdown:
        sys.stdout.write(getattr(render_diff, f"{kind}_markdown")(result))
    else:
        console = console_out()
        console.print(getattr(render_diff, f"{kind}_view")(result, plain=console.color_system is None))


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
    with funnel(traceback), open_registry(registry) as reg:
        found = reg.verify_findings(ref, name, everything=all_versions, require_signed=require_signed, load=load)
        if _print_findings(found, json_out, signed=require_signed):
            raise typer.Exit(1)


def _print_findings(found: Iterable[Finding], json_out: bool, *, signed: bool) -> bool:
    """Print verify's findings as they come: each problem at once, the drift warnings (reported, not failed: see
    registry.toml [runtime]) after them all; as JSON, one list. True when there was a problem."""
    failed = False

    def lines() -> Iterator[tuple[Problem, bool]]:
        nonlocal failed
        warnings: list[Problem] = []  # only the warnings are held: the problems are printed as they are found
        for finding in found:
            if finding.warning:
                warnings.append(finding.problem)
            else:
                failed = True
                yield finding.problem, False
        yield from ((warning, True) for warning in warnings)

    if json_out:
        print_json_list(
            {"subject": p.subject, "message": p.message, **({"level": "warning"} if warning else {})}
            for p, warning in lines()
        )
        return failed
    console = console_out()
    for problem, warning in lines():
        label = "[yellow]warning:[/yellow]" if warning else "[red]problem:[/red]"
        console.print(f"{label} {one_line(str(problem))}", soft_wrap=True)
    if not failed:
        signed_too = "; every tag is signed by a key registry.toml allows" if signed else ""
        console.print(
            f"[green]verified:[/green] every bundle matches its manifest and every tag the journal{signed_too}"
        )
    return failed
