"""The docs stay true to the code: the CLI reference is current, every command and option is documented, every
command line quoted in docs/ exists, and every relative link points at a file that exists."""

from __future__ import annotations

import html
import importlib.util
import re
import shlex
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dspy_registry.errors import RegistryError

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOC_FILES = sorted(DOCS.glob("*.md"))
LINK_RE = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE_RE = re.compile(r"^(`{3,}|~{3,}).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE_RE = re.compile(r"`[^`\n]*`")


def _load_generator() -> ModuleType:
    path = ROOT / "scripts" / "gen_cli_reference.py"
    spec = importlib.util.spec_from_file_location("gen_cli_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
COMMANDS: dict[str, Any] = gen.commands()


def test_cli_reference_is_current() -> None:
    assert gen.is_current(), "docs/cli.md is out of date: run `python scripts/gen_cli_reference.py`"


def test_check_mode_reports_a_stale_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    stale = tmp_path / "cli.md"
    stale.write_text("# old\n")
    monkeypatch.setattr(gen, "TARGET", stale)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    assert gen.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of date" in err
    assert stale.read_text() == "# old\n"


def test_render_does_not_depend_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    first = gen.render()
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("DSPYREG_REGISTRY", "/somewhere/else")
    assert gen.render() == first


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_is_documented(name: str) -> None:
    command = COMMANDS[name]
    assert (command.help or "").strip(), f"`dspyreg {name}` has no docstring"
    assert f"### `dspyreg {name}`" in (DOCS / "cli.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_and_argument_has_help(name: str) -> None:
    missing = [param.name for param in COMMANDS[name].params if not (getattr(param, "help", None) or "").strip()]
    assert not missing, f"`dspyreg {name}`: no help text for {', '.join(missing)}"


def test_every_exit_code_is_documented() -> None:
    codes = {0, 1, 2, 3, 130}

    def walk(cls: type[RegistryError]) -> None:
        codes.add(cls.exit_code)
        for sub in cls.__subclasses__():
            walk(sub)

    walk(RegistryError)
    reference = (DOCS / "cli.md").read_text(encoding="utf-8")
    for code in sorted(codes):
        assert f"\n| {code} |" in reference, f"exit code {code} is missing from the table in docs/cli.md"


# -- links -----------------------------------------------------------------------------------------------------------
def _prose(text: str) -> str:
    """The markdown without fenced code blocks and inline code, where brackets are not links."""
    return INLINE_CODE_RE.sub("", FENCE_RE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", html.unescape(heading).strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in FENCE_RE.sub("", path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_docs_exist() -> None:
    names = {p.name for p in DOC_FILES}
    assert {"index.md", "cli.md", "quickstart.md", "concepts.md"} <= names


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_relative_links_point_to_existing_files(doc: Path) -> None:
    broken = []
    for target in LINK_RE.findall(_prose(doc.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        path_part, _, fragment = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in _anchors(dest):
            broken.append(f"{target} (no heading #{fragment})")
    assert not broken, f"{doc.name}: broken links: {', '.join(broken)}"


# -- command lines quoted in the docs --------------------------------------------------------------------------------
def _quoted_command_lines() -> list[tuple[str, str]]:
    found = []
    for doc in DOC_FILES:
        if doc.name == "cli.md":
            continue
        text = doc.read_text(encoding="utf-8")
        for block in re.findall(r"^```(?:sh|shell|bash|console)\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = line.removeprefix("$ ").strip()
                if line.startswith("dspyreg "):
                    found.append((doc.name, line.split(" #")[0].split(" | ")[0].split(" > ")[0]))
    return found


QUOTED = _quoted_command_lines()


@pytest.mark.parametrize(("doc", "line"), QUOTED, ids=[f"{d}:{line}" for d, line in QUOTED])
def test_quoted_command_lines_use_real_commands_and_options(doc: str, line: str) -> None:
    words = shlex.split(line)[1:]
    assert words, f"{doc}: `{line}` names no command"
    name = words[0]
    assert name in COMMANDS, f"{doc}: `{line}`: there is no command {name!r}"
    known = gen.option_names(COMMANDS[name]) | {"-h", "--help"}
    unknown = [w.split("=")[0] for w in words[1:] if w.startswith("-") and w.split("=")[0] not in known]
    assert not unknown, f"{doc}: `{line}`: {name} has no option {', '.join(unknown)}"
