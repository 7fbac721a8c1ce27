"""`dspyreg diff` of two saved states whose instructions are 100 KB of prose differing by one word.

    python benchmarks/diff_large.py [--repeats 7] [--kilobytes 100] [--quick]

The instructions repeat a paragraph of ordinary English (so the same words come back thousands of times: the worst
case for a word matcher), in paragraphs; one word in the middle is replaced. Prints a markdown table of the median
wall time of:
- the real CLI (`python -m dspy_registry.cli diff a.json b.json`, a fresh process: cold start included), per format;
- the diff and its text rendering in-process (what the command spends beyond starting Python).
a table of the sizes of the outputs, and the text output itself, which shows the change with context, not the 100 KB.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import ROOT, facts_table, machine, markdown_table, median_seconds, write_generated_block

sys.path.insert(0, str(ROOT))  # the in-process figures import this checkout's dspy_registry

PARAGRAPH = (
    "Answer the question using only the passages given. Quote the passage that supports the answer, and say "
    "unknown when the passages do not contain it. Keep the answer short, plain and in the language of the question."
)


def instructions(kilobytes: int) -> tuple[str, str]:
    paragraphs = [PARAGRAPH] * (kilobytes * 1024 // (len(PARAGRAPH) + 2) + 1)
    before = "\n\n".join(paragraphs)
    middle = len(paragraphs) // 2
    changed = [*paragraphs[:middle], PARAGRAPH.replace("short", "brief"), *paragraphs[middle + 1 :]]
    return before, "\n\n".join(changed)


def state(text: str) -> dict[str, object]:
    signature = {"instructions": text, "fields": [{"prefix": "Question:", "description": "${question}"}]}
    return {"qa": {"traces": [], "train": [], "demos": [], "signature": signature, "lm": None}}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--kilobytes", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 runs per figure, docs untouched")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    info = machine()

    from rich.console import Console

    from dspy_registry.registry import diff_files
    from dspy_registry.render_diff import diff_markdown, diff_view

    before, after = instructions(args.kilobytes)
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a.json", Path(tmp) / "b.json"
        a.write_text(json.dumps(state(before)))
        b.write_text(json.dumps(state(after)))

        def in_process() -> str:
            out = io.StringIO()
            Console(file=out, width=100, color_system=None).print(diff_view(diff_files(str(a), str(b)), plain=True))
            return out.getvalue()

        text = in_process()
        markdown = diff_markdown(diff_files(str(a), str(b)))
        rows = [["diff and text rendering, in-process", f"{median_seconds(in_process, repeats) * 1000:.0f}"]]
        for fmt in ("text", "markdown", "json"):
            command = [sys.executable, "-m", "dspy_registry.cli", "diff", str(a), str(b), "--format", fmt]
            seconds = median_seconds(
                lambda command=command: subprocess.run(command, check=True, capture_output=True, cwd=ROOT), repeats
            )
            rows.append([f"`dspyreg diff a.json b.json --format {fmt}` (fresh process)", f"{seconds * 1000:.0f}"])
    sizes = {
        "instructions": f"{len(before) / 1024:.0f} KB, {len(before.split())} words, one word changed",
        "text output": f"{len(text)} characters",
        "markdown output": f"{len(markdown)} characters",
        "runs per figure (median)": str(repeats),
    }
    facts = {
        "measured": info.measured,
        "machine": f"{info.nproc} cores ({info.cpu}), {info.os}; load average {info.loadavg}",
        "dspyreg": info.dspyreg_source,
        "reproduce": "`python benchmarks/diff_large.py`",
    }
    report = "\n\n".join(
        [facts_table(facts), markdown_table(["measure", "median ms"], rows, numeric=(1,)), facts_table(sizes)]
    )
    print(f"{report}\n\n```\n{text.rstrip()}\n```")
    if not (args.quick or args.no_docs):
        write_generated_block("diff_large", "diff_large.py", "## Diff of large instructions", report)


if __name__ == "__main__":
    main()
