"""The commands that change a registry: init, git-setup, publish, and the journaled moves promote and rollback."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .cli_common import (
    JsonOpt,
    NameOpt,
    ReasonOpt,
    RegistryOpt,
    SignOpt,
    TracebackOpt,
    console_err,
    console_out,
    funnel,
    one_line,
    open_registry,
    print_json,
)
from .errors import RegistryError
from .registry import Registry, default_registry


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
    with funnel(traceback):
        where = path or registry or default_registry()
        with Registry.init(where, bare=bare):
            pass
        console_out().print(f"Initialized dspyreg registry in {where}")


def git_setup(
    registry: RegistryOpt = None,
    traceback: TracebackOpt = False,
) -> None:
    """Make plain git diff, git log -p and git show print dspyreg's view of program.json and prompts.json.

    Commits the diff driver's lines to .gitattributes on main when they are missing (a registry made before
    dspyreg had the driver; `init` writes them), and names the driver's command (`dspyreg textconv`) in the local
    git config: of the registry, of the cache clone of a remote one, and of your own clone when --registry names
    it. git never copies config from a remote, so run it once in each clone: `dspyreg git-setup --registry .`
    inside it."""
    with funnel(traceback):
        with open_registry(registry) as reg:
            result = reg.git_setup()
        out = console_out()
        if result.commit is not None:
            out.print(f"Committed .gitattributes on main ({result.commit[:7]}): `git pull` it into your clones")
        for git_dir in result.configured:
            out.print(f"git diff, log -p and show in {git_dir} print dspyreg's view of program.json and prompts.json")


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
    trainset: Annotated[
        Optional[Path],
        typer.Option("--trainset", help="The training examples (JSON lines): hash and count, in [lineage]."),
    ] = None,
    devset: Annotated[
        Optional[Path],
        typer.Option("--devset", help="The dev examples (JSON lines): content hash and count, in [lineage]."),
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
    with funnel(traceback):
        from .provenance import dataset_file_digest
        from .publishing import publish_inputs
        from .state import read_state_file

        _check_text_options({"--notes": notes, "--optimizer": optimizer, "--lm": lm})
        with open_registry(registry) as reg:
            # Cheap checks first: a bad state or version fails before the program is imported.
            state_dict = read_state_file(state)
            trainset_digest = dataset_file_digest(trainset, "--trainset") if trainset is not None else None
            devset_digest = dataset_file_digest(devset, "--devset") if devset is not None else None
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
                trainset=trainset_digest,
                devset=devset_digest,
            )
        for warning in result.warnings:
            console_err().print(f"[yellow]warning:[/yellow] {one_line(warning)}")
        if json_out:
            print_json(
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

            console_out().print(publish_summary(result))


def _check_text_options(options: dict[str, str | None]) -> None:
    """Text that goes into git and TOML must be valid Unicode: bytes that are not UTF-8 reach Python's argv as lone
    surrogates, which no file or commit can hold."""
    from .saved_state import invalid_text

    for option, value in options.items():
        if value is not None and invalid_text(value):
            raise RegistryError(f"{option} is not valid Unicode (bytes that are not UTF-8?): pass UTF-8 text")


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
    with funnel(traceback), open_registry(registry) as reg:
        result = reg.promote(source, to, name=name, reason=reason, force=force, sign=sign)
        _moved(result, json_out, what=to or "the target environment")


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
    with funnel(traceback), open_registry(registry) as reg:
        result = reg.rollback(env, name=name, reason=reason, sign=sign)
        _moved(result, json_out, what=env or "prod")


def _moved(result: Any, json_out: bool, *, what: str) -> None:
    if json_out:
        print_json([e.to_json() for e in result.entries])
    else:
        from .render import move_summary

        console_out().print(move_summary(result, what=what))


VersionArg = Annotated[str, typer.Argument(metavar="VERSION", help="The version: v1.1 or qa/v1.1.")]


def unassign(
    env: Annotated[str, typer.Argument(metavar="ENV", help="The environment to clear.")],
    reason: ReasonOpt = "",
    sign: SignOpt = None,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Clear an environment (its tag is removed; `rollback` brings back what it held), journaled atomically."""
    with funnel(traceback), open_registry(registry) as reg:
        _moved(reg.unassign(env, name=name, reason=reason, sign=sign), json_out, what=env)


def yank(
    version: VersionArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (required): shown wherever the version is flagged.")],
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Withdraw a version: still loadable by its exact ref, hidden from `list`, refused by promote, flagged by
    load, serve and show. Journaled."""
    _lifecycle(version, reason, False, name, registry, json_out, traceback)


def unyank(
    version: VersionArg,
    reason: ReasonOpt = "",
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Undo `yank`: the version is listed and promotable again. Journaled."""
    _lifecycle(version, reason, True, name, registry, json_out, traceback)


def _lifecycle(
    version: str, reason: str, undo: bool, name: str | None, registry: str | None, json_out: bool, traceback: bool
) -> None:
    with funnel(traceback), open_registry(registry) as reg:
        entry = reg.yank(version, name=name, reason=reason, undo=undo)
        if json_out:
            print_json(entry.to_json())
        else:
            console_out().print(
                f"{entry.program} {entry.to_version}: {entry.action}ed" + (f" ({reason})" if reason else "")
            )


def approve(
    version: VersionArg,
    env: Annotated[str, typer.Option("--for", help="The environment approved for, e.g. prod.")],
    reason: ReasonOpt = "",
    sign: SignOpt = None,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Approve a version for an environment as your git identity (signed when signing is on); registry.toml's
    `[gates.<env>] approvals = N` needs N approvals from people other than the publisher. Journaled."""
    with funnel(traceback), open_registry(registry) as reg:
        approval = reg.approve(version, env, name=name, reason=reason, sign=sign)
        if json_out:
            print_json(approval.to_json())
        else:
            signed = " (signed)" if approval.signature else ""
            console_out().print(f"{approval.version} approved for {approval.env} by {approval.actor}{signed}")
