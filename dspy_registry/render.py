"""Rich views for people of everything but the diff: the tables of list/show/log, the summaries of publish,
promote/rollback and export, and the progress bar of eval/bench. The diff's views are in render_diff.py."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from .lineage import Lineage, describe
from .refs import UNSET
from .results import JournalEntry, MoveResult, PublishResult, VersionDetail, VersionInfo
from .tokens import figures_lines

if TYPE_CHECKING:
    from .export import ExportResult

ENV_STYLE = {"prod": "bold green", "staging": "yellow", "rollback": "magenta"}


def _envs(envs: Sequence[str]) -> Text:
    text = Text()
    for i, env in enumerate(envs):
        if i:
            text.append(" ")
        text.append(env, style=ENV_STYLE.get(env, "cyan"))
    return text


def add_row(table: Table, *cells: Any) -> None:
    """Add a row whose plain strings stay plain: `MIPROv2[light]` or `list[str]` are not rich markup."""
    table.add_row(*(cell if isinstance(cell, Text | Group | Table) else Text(str(cell)) for cell in cells))


def _score(score: float | None) -> str:
    return "-" if score is None else f"{score:.3f}"


def versions_table(
    versions: Sequence[VersionInfo], *, limit: int | None = None, width: int | None = None
) -> Table | Group | Text:
    """The newest `limit` versions (all with None) and every version an environment points at.

    When the one-row-per-version table is wider than `width`, each version takes two or three lines instead: the
    same values, none dropped (see `_stacked_versions`)."""
    if not versions:
        return Text("No versions published yet: `dspyreg publish` one.", style="dim")
    if limit is not None and len(versions) > limit:
        later = Counter[str]()  # versions of the same program after each one (the list is oldest first)
        keep = []
        for v in reversed(versions):
            keep.append(later[v.name] < limit or bool(v.environments))
            later[v.name] += 1
        shown = [v for v, kept in zip(versions, reversed(keep)) if kept]
        hidden = len(versions) - len(shown)
        note = Text(f"{hidden} older versions not shown: `dspyreg list --all`, or --json", style="dim")
        return Group(versions_table(shown, width=width), note)
    cells = [[_text(c) for c in _version_cells(v)] for v in versions]
    header = [Text(c, style="bold") for c in VERSION_COLUMNS]
    without_notes = _width_of([header[:-1], *cells])
    room = NOTES_WIDTH if width is None else min(NOTES_WIDTH, width - without_notes - 2)
    needed = MIN_NOTES_WIDTH if any(v.notes for v in versions) else len("notes")
    if width is not None and room < needed:
        return _stacked_versions(versions, width)
    notes = [Text(shorten(v.notes, room)) for v in versions]
    return Group(*_columns([header, *([*row, note] for row, note in zip(cells, notes))]))


VERSION_COLUMNS = ("program", "version", "environments", "dev score", "eval", "optimizer", "created", "commit", "notes")
NOTES_WIDTH = 60
MIN_NOTES_WIDTH = 16


def _width_of(rows: Sequence[Sequence[Text]], gap: int = 2) -> int:
    """How wide `_columns` lays `rows` out: each column as wide as its widest cell, `gap` between columns."""
    widths: list[int] = [max(cell.cell_len for cell in column) for column in zip(*rows)]
    return sum(widths) + gap * (len(widths) - 1)


def _version_cells(v: VersionInfo) -> tuple[Any, ...]:
    return (
        v.name,
        Text(v.version, style="bold") + (Text(" yanked", style="red") if v.yanked is not None else Text()),
        _envs(v.environments),
        _score(v.dev_score),
        _score(v.eval_score),
        v.optimizer or "-",
        v.created[:16].replace("T", " "),
        v.commit[:7],
    )


def _natural_width(table: Table) -> int:
    from rich.console import Console

    console = Console(width=100_000)
    return console.measure(table).maximum


def _stacked_versions(versions: Sequence[VersionInfo], width: int) -> Group:
    """Narrow terminals: program, version, environments, scores and commit in columns; optimizer and created on a
    second line, notes on a third, each cut to the width with an ellipsis (never a column left out)."""
    header = [Text(c, style="bold") for c in ("program", "version", "environments", "dev score", "eval", "commit")]
    rows: list[list[Text]] = []
    below: list[list[Text | Padding]] = []
    for v in versions:
        name, version, envs, dev, evals, optimizer, created, commit = _version_cells(v)
        rows.append([_text(c) for c in (name, version, envs, dev, evals, commit)])
        lines: list[Text | Padding] = [_cut(Text(f"  optimizer {optimizer} · created {created}", style="dim"), width)]
        if v.notes:
            lines.append(Padding(Text(shorten(v.notes, 120)), (0, 0, 0, 2)))  # wraps, indented: notes are read
        below.append(lines)
    aligned = _columns([header, *rows])
    out: list[Text | Padding] = [_cut(aligned[0], width)]
    for line, extra in zip(aligned[1:], below):
        out += [_cut(line, width), *extra]
    return Group(*out)


def _text(cell: Any) -> Text:
    return cell if isinstance(cell, Text) else Text(str(cell))


def _columns(rows: Sequence[Sequence[Text]], gap: int = 2) -> list[Text]:
    """Rows of cells as lines, each column as wide as its widest cell; no padding after the last cell."""
    widths = [max(cell.cell_len for cell in column) for column in zip(*rows)]
    lines = []
    for row in rows:
        line = Text()
        for i, cell in enumerate(row):
            line.append_text(cell)
            if i < len(row) - 1:
                line.append(" " * (widths[i] - cell.cell_len + gap))
        lines.append(line)
    return lines


def _cut(line: Text, width: int) -> Text:
    if line.cell_len > width:
        line.truncate(width, overflow="ellipsis")
    line.no_wrap = True
    return line


def lineage_rows(lineage: Lineage, runtime: Mapping[str, str]) -> list[tuple[str, str]]:
    """`show`'s rows for [lineage]; optimizer arguments masked as diff masks them (a forged manifest may hold a key).
    The host's versions only when they differ from [runtime], which the row above prints (dspyreg writes the same)."""
    import json

    from .state import mask_credentials

    rows = [(key.removeprefix("lineage."), describe(key, value) or "") for key, value in lineage.flat().items()]
    rows = [(label, text) for label, text in rows if text]  # the datasets and the code
    if lineage.optimizer is not None:
        args = mask_credentials(dict(lineage.optimizer.args))
        shown = ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in args.items())
        rows.append(("optimizer class", lineage.optimizer.name))
        rows.append(("optimizer args", shown or "-"))
    if any(runtime.get(k) != v for k, v in lineage.host.items()):
        rows.append(("published on", ", ".join(f"{k} {v}" for k, v in lineage.host.items())))
    return rows


def detail_view(d: VersionDetail) -> Group:
    info, m = d.info, d.manifest
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    rows: list[tuple[str, Any]] = [
        ("program", info.name),
        ("version", Text(info.version, style="bold")),
        *([("yanked", Text(info.yanked, style="red"))] if info.yanked is not None else []),
        ("environments", _envs(info.environments) if info.environments else "-"),
        ("commit", info.commit),
        ("created", f"{m.program.created} by {m.program.author}"),
        ("entrypoint", m.program.entrypoint),
        ("optimizer", m.optimization.optimizer or "-"),
        ("trainset size", str(m.optimization.trainset_size) if m.optimization.trainset_size is not None else "-"),
        ("dev score", _score(m.optimization.dev_score)),
        ("runtime", ", ".join(f"{k} {v}" for k, v in m.runtime.items()) or "-"),
        ("saved with", ", ".join(f"{k} {v}" for k, v in m.saved_with.items()) or "-"),
        ("lm", ", ".join(f"{k}={v}" for k, v in m.lm.items()) or "-"),
    ]
    rows += [(f"metric {k}", str(v)) for k, v in m.optimization.metrics.items()]
    rows += lineage_rows(m.lineage, m.runtime)
    if m.program.notes:
        rows.append(("notes", Text(m.program.notes)))
    for key, value in rows:
        add_row(head, key, value)
    preds = Table(box=None, header_style="bold", pad_edge=False, title="predictors", title_justify="left")
    for column in ("predictor", "signature", "demos", "instructions"):
        preds.add_column(column, overflow="fold")
    for name, p in d.predictors.items():
        boot = sum(1 for demo in p.get("demos", []) if demo.get("augmented"))
        count = len(p.get("demos", []))
        add_row(
            preds,
            name,
            Text(p.get("signature", "")),
            f"{count} ({boot} bootstrapped)",
            Text(shorten(p.get("instructions", ""), 160)),
        )
    parts: list[Any] = [head, Text(), preds, Text(), Text("\n".join(figures_lines(m.tokens)))]
    if d.records.evaluations:
        evals = Table(box=None, header_style="bold", pad_edge=False, title="evaluations", title_justify="left")
        for column in ("time", "metric", "score", "n", "devset", "lm", "leaked"):
            evals.add_column(column, overflow="fold")
        for r in d.records.evaluations:
            # leaked: dev examples found among the demos (their ids in `show --json`); "-": not checked (older record)
            leaked = "-" if r.leakage is None else str(r.leakage)
            add_row(evals, r.time, r.metric, _score(r.score), r.n, r.devset or "", r.lm or "", leaked)
        parts += [Text(), evals]
    if d.records.benchmarks:
        benches = Table(box=None, header_style="bold", pad_edge=False, title="benchmarks", title_justify="left")
        for column in ("time", "n", "concurrency", "p50 ms", "p95 ms", "max ms", "tokens/query", "cost/query", "lm"):
            benches.add_column(column, overflow="fold")
        for b in d.records.benchmarks:
            cost = "-" if b.cost_per_query is None else f"${b.cost_per_query:.6f}"
            add_row(
                benches, b.time, b.n, b.concurrency, b.p50_ms, b.p95_ms, b.max_ms, b.tokens_per_query, cost, b.lm or ""
            )
        parts += [Text(), benches]
    return Group(*parts)


@contextmanager
def progress(label: str) -> Iterator[Callable[[int], Callable[[], None]]]:
    """A rich progress bar on stderr: yields `start(total) -> advance()`, for calls from any thread.

    The bar appears on the first `start`: a command refused before it has work prints its one error line only."""
    from contextlib import ExitStack

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with ExitStack() as stack:

        def start(total: int) -> Callable[[], None]:
            bar = Progress(
                TextColumn(label),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            stack.enter_context(bar)
            task = bar.add_task(label, total=total)
            return lambda: bar.advance(task)

        yield start


def log_table(entries: Sequence[JournalEntry], *, width: int | None = None) -> Table | Group | Text:
    """One row per move; narrower than the table, each move takes two lines (the actor and reason below it)."""
    if not entries:
        return Text("No environment moves yet.", style="dim")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("time", "program", "env", "action", "from", "to", "actor", "reason"):
        table.add_column(column, no_wrap=column != "reason", overflow="fold")
    for e in entries:
        add_row(table, *_move_cells(e), Text(e.actor.split(" <")[0]), Text(e.reason))
    if width is None or _natural_width(table) <= width:
        return table
    header = [Text(c, style="bold") for c in ("time", "program", "env", "action", "from", "to")]
    lines = _columns([header, *([_text(c) for c in _move_cells(e)] for e in entries)])
    out: list[Text | Padding] = [_cut(lines[0], width)]
    for line, e in zip(lines[1:], entries):
        by = Text(f"by {e.actor.split(' <')[0]}" + (f": {e.reason}" if e.reason else ""), style="dim")
        out += [_cut(line, width), Padding(by, (0, 0, 0, 2))]  # the reason wraps, indented: it is read whole
    return Group(*out)


def _move_cells(e: JournalEntry) -> tuple[Any, ...]:
    return (
        e.time[:19].replace("T", " "),
        e.program,
        Text(e.env or "-", style=ENV_STYLE.get(e.env, "cyan")),
        e.action,
        e.from_version or UNSET,
        e.to_version or UNSET,
    )


def move_summary(result: MoveResult, *, what: str) -> Text:
    """One line per moved tag; a forced promote says which gates it overrode."""
    if not result.changed:
        return Text(f"Nothing to do: {what} already points there.", style="dim")
    text = Text()
    for i, e in enumerate(result.entries):
        if i:
            text.append("\n")
        text.append(f"{e.program}/{e.env}", style=ENV_STYLE.get(e.env, "cyan"))
        text.append(f": {e.from_version or UNSET} -> ")
        text.append(e.to_version or UNSET, style="bold")
        text.append(f"  ({e.action})", style="dim")
        if e.override:
            text.append(f"  overriding gates: {e.override}", style="yellow")
    return text


def export_summary(program: str, version: str, result: ExportResult) -> Text:
    """What an export wrote and, into a used folder, which files it replaced or removed (all others were kept)."""
    text = Text("Exported ")
    text.append(f"{program} {version}", style="bold green")
    text.append(f" to {result.path} ({len(result.files)} files).")
    if result.replaced or result.removed:
        text.append(f" Replaced {len(result.replaced)} files of the bundle")
        if result.removed:
            text.append(f", removed {len(result.removed)} the previous export wrote and this one does not have")
        text.append("; every other file was kept.")
        if result.replaced:
            text.append(f"\n  replaced: {', '.join(result.replaced)}", style="dim")
        for path in result.removed:
            text.append(f"\n  removed  {path}", style="dim")
    text.append(f"\nRun it: cd {result.path} && python api.py --port 8000")
    return text


def publish_summary(result: PublishResult) -> Text:
    text = Text("Published ")
    text.append(f"{result.name} {result.version}", style="bold green")
    text.append(f" as commit {result.commit[:10]} ({len(result.files)} files)")
    return text


def shorten(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
