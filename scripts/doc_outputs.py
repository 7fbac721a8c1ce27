"""Run a docs page's shell blocks as tests/test_docs_output.py does and write what they printed into the output
block after each one: `python scripts/doc_outputs.py docs/insight.md`. For pages that start from a copy of
examples/ (COPY_EXAMPLES there); review the diff before committing, as for any generated text."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import test_docs_output as docs  # noqa: E402
from tests.serving import free_port  # noqa: E402


def main(page: str) -> None:
    if page not in docs.COPY_EXAMPLES:
        raise SystemExit(f"{page}: only pages that start from examples/ ({', '.join(docs.COPY_EXAMPLES)})")
    scratch = Path(tempfile.mkdtemp(prefix="dspyreg-docs-"))
    folder = scratch / "work"
    folder.mkdir()
    shutil.copytree(ROOT / "examples", folder / "examples")
    run = docs.PageRun(folder, docs._base_env(scratch), {p: str(free_port()) for p in docs.DOC_PORTS})
    try:
        run.run_page(page)
    finally:
        run.stop()
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines(keepends=True)
    for block in reversed([b for b in docs.BLOCKS[page] if b.lang == "sh" and b.output is not None]):
        ran = run.results.get(block.id)
        if ran is None:
            continue
        if ran.returncode != 0:
            print(f"{block.id}: exit {ran.returncode}\n{ran.output}", file=sys.stderr)
        output = ran.output
        for doc_port, port in run.ports.items():
            output = output.replace(port, doc_port)
        start = block.output.line  # the output block's opening fence, 1-based
        end = start + (0 if block.output.body == "\n" else len(block.output.body.splitlines()))
        lines[start:end] = [output if output.endswith("\n") else output + "\n"]
    (ROOT / page).write_text("".join(lines), encoding="utf-8")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1])
