"""Dev-set leakage: which dev examples' inputs already sit among a version's demos, and each example's stable id.

A dev example found among the demos the LM is shown inflates the dev score: the program is graded on an answer it
was given. Pure: the demos come from the version's prompts.json (and program.json) as read from git, never by
importing the version's code. A match is exact after normalizing each value (casefold, collapse whitespace, strip)
on every input field the demo and the dev example share; a demo sharing no input field with the dev set matches
nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

EXAMPLE_ID_LENGTH = 12  # hex digits of sha256: short to read, and a collision in one dev set is out of reach


def example_id(inputs: Mapping[str, Any]) -> str:
    """The stable id of a dev example: sha256 of its inputs as canonical JSON (sorted keys), short form.

    The labels are left out, so relabelling an example keeps its id; the key order is left out, so a dev set
    rewritten by another tool keeps its ids."""
    text = json.dumps(dict(inputs), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:EXAMPLE_ID_LENGTH]


_EXAMPLE_ID_RE = re.compile(f"[0-9a-f]{{{EXAMPLE_ID_LENGTH}}}")


def is_example_id(value: Any) -> bool:
    return isinstance(value, str) and _EXAMPLE_ID_RE.fullmatch(value) is not None


def normalized(value: Any) -> str:
    """A value as compared for leakage: text casefolded with its whitespace collapsed; anything else as JSON first."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return " ".join(text.casefold().split())


def demo_inputs(prompts: Any, state: Any) -> list[dict[str, str]]:
    """Every demo's input values, normalized, from prompts.json (which names each predictor's input fields) and
    program.json (the saved state, whose demos carry no field roles: every key of a demo is taken). Anything not
    in the shape dspyreg writes is skipped: a leakage check must not fail on a file verify reports anyway."""
    found: list[dict[str, str]] = []
    for source, typed in ((prompts, True), (state, False)):
        if not isinstance(source, dict):
            continue
        for predictor in source.values():
            if not isinstance(predictor, dict) or not isinstance(predictor.get("demos"), list):
                continue
            names: set[str] | None = None
            if typed and isinstance(predictor.get("inputs"), list):
                names = {
                    f["name"] for f in predictor["inputs"] if isinstance(f, dict) and isinstance(f.get("name"), str)
                }
            for demo in predictor["demos"]:
                if isinstance(demo, dict):
                    found.append(
                        {
                            k: normalized(v)
                            for k, v in demo.items()
                            if isinstance(k, str) and (names is None or k in names)
                        }
                    )
    return found


def leaked_ids(examples: Iterable[Mapping[str, Any]], demos: Sequence[Mapping[str, str]]) -> list[str]:
    """The ids of the dev examples (their inputs) whose values equal a demo's on every input field they share."""
    out: list[str] = []
    for inputs in examples:
        values = {k: normalized(v) for k, v in inputs.items()}
        for demo in demos:
            shared = [k for k in demo if k in values]
            if shared and all(demo[k] == values[k] for k in shared):
                out.append(example_id(inputs))
                break
    return out
