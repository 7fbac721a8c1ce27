"""The output shown in the docs is what the tool prints: every ```sh block of a page that shows output is run, in
order, in a scratch folder (one per page), and the ```text or ```json block right after it is compared by shape with
what the commands printed: table columns and row keys, file lists, JSON keys, every other line with shas, times,
durations and runtime versions normalized.

A block that cannot run in a test (docker, a package index, a long-running server) says so in the markdown with
`<!-- not-run: why -->` on the line before it, so nothing is skipped silently: an unmarked block runs, and fails
the test if it fails. Ports written in the docs are swapped for free ones, and every process a page starts in the
background is stopped when its page is done.

One test runs one page whole and checks each of its blocks (a page's blocks share one shell state, so a test per
block would run the page again on every xdist worker that gets one of its blocks).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dspy_registry.registry import Registry

from .conftest import ROOT, once_per_run, publish_example
from .serving import free_port

PAGES = ("README.md", "docs/quickstart.md", "docs/deployment.md", "docs/grpc.md", "docs/insight.md")
COPY_EXAMPLES = ("docs/quickstart.md", "docs/insight.md")  # pages that start from a copy of examples/
PROD = {"docs/deployment.md": "v1.0", "docs/grpc.md": "v1.1"}  # pages that start from a registry: what prod holds
OUTPUT_LANGS = ("text", "json")
NOT_RUN_RE = re.compile(r"^<!-- not-run: (.*?) -->$")
SAVE_AS_RE = re.compile(r"[Ss]ave this as `([^`]+)`")
DOC_PORTS = ("8000", "8001", "50051")  # the ports the docs use, swapped for free ones in a test
BLOCK_TIMEOUT = 120


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    body: str
    not_run: str | None  # the reason given by `<!-- not-run: ... -->` on the line before
    save_as: str | None  # "Save this as `name`:" on the line before a code block
    output: Block | None = None  # the text/json block right after a sh block

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def parse(page: str) -> list[Block]:
    """The fenced blocks of a page, in order; a sh block gets the output block that directly follows it."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    last_prose = ""  # the last non-blank line before a fence
    since_block = ""  # what stands between the previous block and this one
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            if lines[i].strip():
                last_prose = lines[i].strip()
                since_block += lines[i]
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        i += 1
        marker = NOT_RUN_RE.match(last_prose)
        save_as = SAVE_AS_RE.search(last_prose)
        block = Block(
            page=page,
            line=start + 1,
            lang=fence.group(1),
            body="\n".join(body) + "\n",
            not_run=marker.group(1).strip() if marker else None,
            save_as=save_as.group(1) if save_as else None,
        )
        if block.lang in OUTPUT_LANGS and blocks and blocks[-1].lang == "sh" and not since_block:
            blocks[-1] = Block(**{**blocks[-1].__dict__, "output": block})
        blocks.append(block)
        last_prose = ""
        since_block = ""
    return blocks


BLOCKS = {page: parse(page) for page in PAGES}
SH_BLOCKS = [b for page in PAGES for b in BLOCKS[page] if b.lang == "sh"]
RUN_BLOCKS = [b for b in SH_BLOCKS if b.not_run is None]
RUN_PAGES = [page for page in PAGES if any(b.page == page for b in RUN_BLOCKS)]


# -- shapes ----------------------------------------------------------------------------------------------------------
_NORMALIZE = [
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?"), "<time>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b"), "<sha>"),
    (re.compile(r"\b\d+(\.\d+)?\s?(ms|s)\b"), "<duration>"),
    (re.compile(r"\b\d+\.\d+\.\d+\S*"), "<x.y.z>"),  # runtime versions: python 3.11.7, dspy 3.4.1
    (re.compile(r"\s+"), " "),
]
_HEADER_CELL = re.compile(r"^[a-z][a-z_]*( [a-z_]+)*$")


def norm(text: str) -> str:
    for pattern, repl in _NORMALIZE:
        text = pattern.sub(repl, text)
    return text.strip()


def _cells(line: str) -> list[str]:
    return [c for c in re.split(r"\s{2,}", line.strip()) if c]


def _json_shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_shape(v) for v in value]
    return type(value).__name__


def shape(text: str) -> list[Any]:
    """What must stay equal between a page's output and the tool's: rich tables by header and, per row, first cell
    and number of filled cells; markdown tables the same; panels by title, sections, demo markers and counts; JSON
    by keys; other lines normalized."""
    try:
        return [("json", _json_shape(json.loads(text)))]
    except json.JSONDecodeError:
        pass
    lines = text.splitlines()
    items: list[Any] = []
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        i += 1
        if not line.strip():
            continue
        if line.startswith("╭"):
            title = re.search(r"─ (.+?) ─", line)
            items.append(("panel", title.group(1) if title else ""))
            while i < len(lines) and not lines[i].startswith("╰"):
                inner = lines[i].strip().strip("│").strip()
                i += 1
                if re.fullmatch(r"[a-z][a-z _]*", inner):
                    items.append(("section", inner))
                elif re.match(r"[-+~] ", inner):
                    items.append(("demo", inner[0]))
                elif re.match(r"\d+ -> \d+ demos", inner):
                    items.append(("line", norm(inner)))
            i += 1
            continue
        if line.startswith("|"):
            table = [line]
            while i < len(lines) and lines[i].startswith("|"):
                table.append(lines[i].rstrip())
                i += 1
            rows = [[c.strip() for c in row.strip("|").split("|")] for row in table]
            body = [r for r in rows[1:] if not all(set(c) <= {"-", " ", ":"} for c in r)]
            items.append(("table", rows[0], [(norm(r[0]), len(r)) for r in body]))
            continue
        cells = _cells(line)
        if not line[0].isspace() and len(cells) >= 2 and all(_HEADER_CELL.match(c) for c in cells):
            first_cells = []
            while i < len(lines) and lines[i].strip():
                if not lines[i][0].isspace():  # a wrapped cell continues on lines that start blank
                    row = _cells(lines[i])
                    first_cells.append((norm(row[0]), len(row)))  # the count tells an empty column from a filled one
                i += 1
            items.append(("table", cells, first_cells))
            continue
        items.append(("line", norm(line)))
    return items


# -- running a page --------------------------------------------------------------------------------------------------
@dataclass
class Ran:
    returncode: int
    output: str


@dataclass
class PageRun:
    """One scratch folder and one shell state (cwd, exported variables) carried from block to block."""

    folder: Path
    env: dict[str, str]
    ports: dict[str, str]
    results: dict[str, Ran] = field(default_factory=dict)
    groups: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = self.folder.parent / f"{self.folder.name}-shell"
        self.state.mkdir()
        (self.state / "cwd").write_text(str(self.folder))
        (self.state / "env").write_text("")

    def swap_ports(self, text: str) -> str:
        for doc_port, port in self.ports.items():
            text = re.sub(rf"\b{doc_port}\b", port, text)
        return text

    def run(self, block: Block) -> Ran:
        cwd = Path((self.state / "cwd").read_text().strip())
        if block.lang != "sh":  # a file the page asks to save
            assert block.save_as is not None
            (cwd / block.save_as).write_text(block.body, encoding="utf-8")
            return Ran(0, "")
        env_file, cwd_file = self.state / "env", self.state / "cwd"
        script = (
            f'source "{env_file}"\ncd "{cwd}" || exit 97\n'
            f'trap \'export -p > "{env_file}"; pwd > "{cwd_file}"\' EXIT\n'
            f"set -eo pipefail\n{self.swap_ports(block.body)}"
        )
        out_path = self.state / f"out-{block.line}"
        with out_path.open("wb") as out:
            # A file, not a pipe: a server the block leaves running in the background must not hold us up.
            proc = subprocess.Popen(
                ["bash", "-c", script],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=cwd,
                start_new_session=True,
            )
            self.groups.append(proc.pid)
            try:
                returncode = proc.wait(timeout=BLOCK_TIMEOUT)
            except subprocess.TimeoutExpired:  # a server left in the foreground: this block fails, the page goes on
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
                return Ran(124, f"timed out after {BLOCK_TIMEOUT} s: a server needs `&` or a not-run mark")
        return Ran(returncode, out_path.read_text(encoding="utf-8", errors="replace"))

    def run_page(self, page: str) -> None:
        for block in BLOCKS[page]:
            if block.not_run is not None:
                continue
            if block.lang == "sh" or block.save_as is not None:
                self.results[block.id] = self.run(block)

    def stop(self) -> None:
        for group in self.groups:
            with contextlib.suppress(ProcessLookupError):  # the block's processes all ended already
                os.killpg(group, signal.SIGTERM)


def _base_env(scratch: Path) -> dict[str, str]:
    """A HOME, git identity and cache of the page's own; the venv's scripts (dspyreg, python) first on PATH."""
    home = scratch / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPYREG_", "GIT_"))}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=str(home / ".gitconfig"),
        GIT_AUTHOR_NAME="Ada Lovelace",
        GIT_AUTHOR_EMAIL="ada@example.com",
        GIT_COMMITTER_NAME="Ada Lovelace",
        GIT_COMMITTER_EMAIL="ada@example.com",
        DSPYREG_CACHE=str(home / "cache"),
        LITELLM_LOCAL_MODEL_COST_MAP="true",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
        COLUMNS="120",
        NO_COLOR="1",
        TERM="dumb",
    )
    return env


def _cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dspy_registry.cli", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"dspyreg {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def docs_registry(tmp_path_factory: pytest.TempPathFactory, states: dict[str, Path]) -> Path:
    """A registry holding qa v1.0 and v1.1, as the deployment and gRPC pages assume, published once per run (xdist's
    workers share it) in this process (DSPy imported once, not per command) under a page's identity. Pages and
    tests take copies."""

    def publish(folder: Path) -> None:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in _base_env(folder).items():
                mp.setenv(key, value)
            with Registry.init(folder / "registry") as reg:
                for version in ("v1.0", "v1.1"):
                    publish_example(reg, states[version], version)

    return once_per_run(tmp_path_factory, "docs-registry", publish) / "registry"


def _registry_copy(docs_registry: Path, folder: Path, env: dict[str, str], *, prod: str | None = None) -> None:
    """./registry in `folder`: a copy of `docs_registry`, with `prod` (if given) in prod, moved under the page's
    identity."""
    shutil.copytree(docs_registry, folder / "registry", symlinks=True)
    if prod is None:
        return
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        with Registry.open(folder / "registry") as reg:
            reg.promote(prod)
            reg.promote("staging")


def run_in_scratch(page: str, scratch: Path, request: pytest.FixtureRequest) -> PageRun:
    """The page's blocks run in order in one scratch folder; the processes they left running are stopped."""
    folder = scratch / "work"
    folder.mkdir()
    env = _base_env(scratch)
    if page in COPY_EXAMPLES:  # a checkout of dspyreg: the page copies examples/ out of it
        shutil.copytree(ROOT / "examples", folder / "examples")
    elif page in PROD:
        _registry_copy(request.getfixturevalue("docs_registry"), folder, env, prod=PROD[page])
    run = PageRun(folder, env, {p: str(free_port()) for p in DOC_PORTS})
    try:
        run.run_page(page)
    finally:
        run.stop()
    return run


@pytest.fixture
def registry_copy(docs_registry: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder holding ./registry (a copy of `docs_registry`) and the environment of a page run there."""
    scratch = tmp_path / "scratch"
    (scratch / "work").mkdir(parents=True)
    env = _base_env(scratch)
    _registry_copy(docs_registry, scratch / "work", env)
    return scratch / "work", env


# -- tests -----------------------------------------------------------------------------------------------------------
def test_the_pages_show_output_and_run_commands() -> None:
    """The pages this file checks are the ones that show output; each has blocks that run."""
    for page in ("docs/quickstart.md", "docs/deployment.md"):
        assert any(b.output for b in BLOCKS[page]), f"{page} shows no output"
    for page in PAGES[1:]:
        assert any(b.not_run is None for b in BLOCKS[page] if b.lang == "sh"), f"{page}: no sh block runs"
    other = [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "docs").glob("*.md"))]
    shows_output = [p for p in other if p not in PAGES and any(b.output for b in parse(p))]
    assert not shows_output, f"pages that show command output but are not checked here: {shows_output}"


@pytest.mark.parametrize("block", SH_BLOCKS, ids=lambda b: b.id)
def test_a_block_not_run_says_why(block: Block) -> None:
    if block.not_run is not None:
        assert len(block.not_run) > 8, f"{block.id}: `<!-- not-run: ... -->` needs a reason"
        assert block.output is None, f"{block.id}: shows output that no test checks"


def test_markers_stand_before_sh_blocks() -> None:
    for page in PAGES:
        for block in BLOCKS[page]:
            assert block.not_run is None or block.lang == "sh", f"{block.id}: not-run marks a {block.lang} block"


@pytest.mark.parametrize("page", RUN_PAGES)
def test_shown_commands_run_and_print_what_the_page_shows(
    page: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run = run_in_scratch(page, tmp_path, request)
    failures = []
    for block in (b for b in RUN_BLOCKS if b.page == page):
        ran = run.results[block.id]
        if ran.returncode != 0:
            failures.append(f"{block.id} failed (exit {ran.returncode}):\n{block.body}\n{ran.output}")
        elif block.output is not None and shape(ran.output) != shape(block.output.body):
            failures.append(f"{block.id}: the page shows\n{block.output.body}\nthe tool printed\n{ran.output}")
    assert not failures, "\n\n".join(failures)


# -- file lists ------------------------------------------------------------------------------------------------------
def _export_table_patterns() -> list[str]:
    text = (ROOT / "docs/deployment.md").read_text(encoding="utf-8")
    table = text.split("| file | what |", 1)[1].split("\n\n", 1)[0]
    patterns = []
    for row in table.strip().splitlines()[1:]:
        first = row.strip("|").split("|")[0]
        patterns += re.findall(r"`([^`]+)`", first)
    return patterns


def _matches(pattern: str, path: str) -> bool:
    return path.startswith(pattern) if pattern.endswith("/") else fnmatch.fnmatchcase(path, pattern)


def test_the_export_table_lists_every_file_an_export_writes(
    tmp_path: Path, registry_copy: tuple[Path, dict[str, str]]
) -> None:
    folder, env = registry_copy
    _cli(env, folder, "export", "v1.1", str(tmp_path / "out"))
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    patterns = _export_table_patterns()
    unlisted = [f for f in written if not any(_matches(p, f) for p in patterns)]
    unwritten = [p for p in patterns if not any(_matches(p, f) for f in written)]
    assert not unlisted, f"docs/deployment.md's export table misses {unlisted}"
    assert not unwritten, f"docs/deployment.md's export table lists {unwritten}, which an export does not write"


def test_the_bundle_tree_in_concepts_is_a_published_version(docs_registry: Path) -> None:
    text = (ROOT / "docs/concepts.md").read_text(encoding="utf-8")
    tree = text.split("A version's bundle is the folder", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    lines = tree.splitlines()
    assert lines[0] == "qa/"
    shown = sorted(line.strip() for line in lines[1:])
    listed = subprocess.run(
        ["git", "-C", str(docs_registry), "ls-tree", "-r", "--name-only", "qa/v1.1", "qa/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    published = sorted(name.removeprefix("qa/") for name in listed.split())
    assert shown == published


# -- install lines ---------------------------------------------------------------------------------------------------
def test_install_lines_work_from_a_clone() -> None:
    """dspy-registry is not on a package index yet: every install line installs the clone (or a wheel of it)."""
    offending = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"pip install\s+['\"]?dspy-registry\b", line):
                offending.append(f"{doc.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offending, "installs from an index that does not have the package:\n" + "\n".join(offending)


# -- the .proto shown in grpc.md -------------------------------------------------------------------------------------
def _proto_tokens(text: str) -> list[str]:
    """Declarations only: comments dropped, layout ignored."""
    return re.findall(r"[A-Za-z_][\w.]*|\d+|[{}();=\"]", re.sub(r"//[^\n]*", "", text))


def test_the_proto_in_grpc_md_is_what_proto_prints(registry_copy: tuple[Path, dict[str, str]]) -> None:
    shown = next(b for b in BLOCKS["docs/grpc.md"] if b.lang == "proto")
    folder, env = registry_copy
    printed = _cli(env, folder, "proto", "v1.1")
    assert _proto_tokens(shown.body) == _proto_tokens(printed)


def test_the_readme_keeps_two_set_up_commands_for_ci() -> None:
    """.ci/run runs the lines of README's first sh block, and expects exactly two."""
    first = next(b for b in BLOCKS["README.md"] if b.lang == "sh")
    assert len([line for line in first.body.splitlines() if line.strip()]) == 2
    assert first.not_run is not None
