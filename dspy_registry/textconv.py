"""`dspyreg textconv FILE`: git's textconv diff driver for a bundle's program.json and prompts.json.

Git hands the driver a temporary copy whose name says nothing, so the kind of file is told by its content; the view is
diff.py's ProgramView (so credentials are masked exactly as `dspyreg diff` masks them), printed as plain lines that
git's own line diff compares: per predictor its instructions, typed fields, lm and demos as blocks. A textconv must
never fail a `git diff`: anything that is not a state or prompts.json dspyreg knows (bad JSON, unknown shape, a file
over DSPYREG_MAX_STATE_BYTES) is printed unchanged. Imports neither dspy nor rich: git runs it once per file version.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from .diff import (
    VOLATILE_DEMO_KEYS,
    FieldView,
    PredictorView,
    ProgramView,
    field_desc,
    value_text,
    view_from_bundle,
    view_from_state,
)
from .errors import BadState, RegistryError
from .state import DEFAULT_MAX_STATE_BYTES, is_predictor_state, max_state_bytes, parse_state

INDENT = "  "


def semantic_text(data: bytes) -> str | None:
    """dspyreg's view of a program.json or prompts.json, or None when `data` is neither."""
    try:
        value = parse_state(data, "the file")
    except BadState:
        return None
    try:
        if _is_prompts(value):
            return render_view(view_from_bundle("prompts.json", value, {}, {}), "prompts.json")
        if any(is_predictor_state(v) for v in value.values()):
            return render_view(view_from_state("program.json", value), "program.json")
    except Exception:  # a shape no view expects (a hand-made file): git must still show it, as it is
        return None
    return None


def _is_prompts(value: Mapping[str, Any]) -> bool:
    """prompts.json: every entry a predictor with lists of named `inputs` and `outputs` (a state has neither)."""
    return bool(value) and all(
        isinstance(p, dict)
        and all(
            isinstance(p.get(key), list) and all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in p[key])
            for key in ("inputs", "outputs")
        )
        for p in value.values()
    )


def render_view(view: ProgramView, kind: str) -> str:
    lines = [f"dspyreg view of {kind}: {len(view.predictors)} predictor(s)"]
    for name, predictor in view.predictors.items():
        lines += ["", f"predictor {name}", *_predictor_lines(predictor)]
    if view.params or view.metadata:
        lines.append("")
    lines += [f"state {key}: {value_text(value)}" for key, value in view.params.items()]
    lines += [f"{key}: {value_text(value)}" for key, value in view.metadata.items()]
    return "\n".join(lines) + "\n"


def _predictor_lines(p: PredictorView) -> list[str]:
    lines = [f"{INDENT}instructions:"]
    lines += _block(p.instructions or "", 2) if p.instructions is not None else [f"{INDENT * 2}(none)"]
    lines += [f"{INDENT}{f.role} {_field_line(f)}" for f in p.fields]
    lines.append(f"{INDENT}lm: {value_text(p.lm) or '(none)'}")
    lines += [f"{INDENT}{key}: {value_text(value)}" for key, value in p.other.items() if value not in ([], {}, None)]
    boot = sum(1 for d in p.demos if d.get("augmented"))
    lines.append(f"{INDENT}demos: {len(p.demos)} (bootstrapped {boot}, labeled {len(p.demos) - boot})")
    for i, demo in enumerate(p.demos, start=1):
        lines.append(f"{INDENT * 2}demo {i}{' (bootstrapped)' if demo.get('augmented') else ''}")
        lines += _demo_lines(demo, p.input_names or ())
    return lines


def _field_line(f: FieldView) -> str:
    """A field as `dspyreg diff` names it, with the prefix the prompt shows: `question: str — The user question.
    [Question:]`."""
    return field_desc(f) + (f" [{f.prefix}]" if f.prefix and f.name else "")


def _demo_lines(demo: Mapping[str, Any], input_names: Sequence[str]) -> list[str]:
    """Each key on its own line, the identifying inputs first; a multi-line value indented under its key."""
    keys = [k for k in input_names if k in demo] + [k for k in demo if k not in input_names]
    lines = []
    for key in keys:
        if key in VOLATILE_DEMO_KEYS:
            continue
        value = demo[key]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            # A list of passages: one per line, so a changed passage is one changed line.
            lines.append(f"{INDENT * 3}{key}:")
            for item in value:
                first, *rest = item.split("\n")
                lines += [f"{INDENT * 4}- {first}".rstrip(), *_block("\n".join(rest), 5)[: len(rest)]]
            continue
        text = value_text(value)
        first, *rest = text.split("\n") if text else [""]
        lines.append(f"{INDENT * 3}{key}: {first}".rstrip())
        lines += [f"{INDENT * 4}{line}".rstrip() for line in rest]
    return lines


def _block(text: str, depth: int) -> list[str]:
    return [f"{INDENT * depth}{line}".rstrip() for line in text.split("\n")]


# -- the driver ------------------------------------------------------------------------------------------------------
def write_textconv(path: Path, out: BinaryIO) -> None:
    """Write the view of the file at `path` to `out`, or its bytes unchanged. BadState only when there is no
    regular file to read (a person's typo: git always passes one)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO with no writer must not hang
    except OSError as err:
        raise BadState(f"cannot read {path}: {err.strerror or err}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BadState(f"{path} is not a regular file: pass a program.json or prompts.json")
    with os.fdopen(fd, "rb") as handle:
        try:
            limit = max_state_bytes()
        except BadState:  # a bad DSPYREG_MAX_STATE_BYTES must not fail a git diff either
            limit = DEFAULT_MAX_STATE_BYTES
        head = handle.read(limit + 1)
        view = semantic_text(head) if len(head) <= limit else None
        if view is not None:
            out.write(view.encode())
            return
        out.write(head)
        shutil.copyfileobj(handle, out)  # a huge file: the rest as it is, never whole in memory


def main(argv: Sequence[str]) -> int:
    """The fast path of `dspyreg textconv FILE` (entry.py): no typer, no rich unless there is an error to print."""
    try:
        write_textconv(Path(argv[0]), sys.stdout.buffer)
        sys.stdout.flush()
    except RegistryError as err:
        from .cli_common import console_err, one_line

        console_err().print(f"[red]error:[/red] {one_line(str(err))}", markup=True, highlight=False)
        return err.exit_code
    return 0
