"""`dspyreg site DIR` writes only inside DIR and only into a folder it owns (or with --force); `dspyreg ui` refuses a
taken port in one line; the ui's pages never import dspy. (The pages themselves are checked in a browser:
tests/test_ui_browser.py.)"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.registry import Registry

from .conftest import git, ref_snapshot

runner = CliRunner()


def site(registry: Registry, dest: Path, *extra: str) -> object:
    return runner.invoke(app, ["site", str(dest), "--registry", registry.location, *extra])


def test_site_writes_every_page_kind_with_relative_links(published: Registry, tmp_path: Path) -> None:
    published.promote("v1.0", "prod")
    before = ref_snapshot(Path(published.location))
    result = site(published, tmp_path / "site")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    files = sorted(p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("*") if p.is_file())
    assert files == [
        ".dspyreg-bundle.json",
        ".dspyreg-site",
        "index.html",
        "programs/qa.html",
        "programs/qa/diff/v1.0..v1.1.html",
        "programs/qa/journal.html",
        "programs/qa/versions/v1.0.html",
        "programs/qa/versions/v1.1.html",
        "static/style.css",
    ]
    page = (tmp_path / "site" / "programs/qa/versions/v1.0.html").read_text()
    assert 'href="../../../static/style.css"' in page and "http" not in page.split("<body>")[0]  # nothing fetched
    assert ref_snapshot(Path(published.location)) == before


def test_site_refuses_a_folder_it_did_not_write(published: Registry, tmp_path: Path) -> None:
    dest = tmp_path / "docs"
    dest.mkdir()
    (dest / "notes.md").write_text("mine")
    result = site(published, dest)
    assert result.exit_code == 1 and "is not empty" in result.output  # type: ignore[attr-defined]
    assert [p.name for p in dest.iterdir()] == ["notes.md"]
    assert site(published, dest, "--force").exit_code == 0  # type: ignore[attr-defined]
    assert (dest / "notes.md").read_text() == "mine" and (dest / "index.html").is_file()


def test_rebuilding_a_site_replaces_only_its_own_pages(published: Registry, tmp_path: Path) -> None:
    dest = tmp_path / "site"
    assert site(published, dest).exit_code == 0  # type: ignore[attr-defined]
    (dest / "CNAME").write_text("registry.example.com")  # what a pages host keeps beside a site
    stale = dest / "programs/qa/versions/v9.9.html"
    stale.write_text("old")
    listed = json.loads((dest / ".dspyreg-bundle.json").read_text())
    listed["files"].append("programs/qa/versions/v9.9.html")  # as if an earlier build had written it
    (dest / ".dspyreg-bundle.json").write_text(json.dumps(listed))
    assert site(published, dest).exit_code == 0  # type: ignore[attr-defined]  # no --force: the folder is ours
    assert not stale.exists() and (dest / "CNAME").read_text() == "registry.example.com"


def test_ui_refuses_a_taken_port_in_one_line(published: Registry) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["ui", "--registry", published.location, "--port", str(port)])
    assert result.exit_code == 1 and "cannot serve the ui on 127.0.0.1" in result.output  # type: ignore[attr-defined]


def test_pages_never_import_dspy(published: Registry) -> None:
    code = (
        "import sys\n"
        "from dspy_registry.registry import Registry\n"
        "from dspy_registry.ui.pages import Pages\n"
        f"reg = Registry.open({published.location!r})\n"
        "pages = Pages(reg, live=False)\n"
        "html = [pages.render(p) for p in pages.site_paths()]\n"
        "print(sorted(m for m in ('dspy', 'litellm') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_template_workflow_builds_the_site_and_publishes_it(published: Registry, tmp_path: Path) -> None:
    import yaml

    registry = Path(published.location)
    workflow = yaml.safe_load(git(registry, "show", "main:.github/workflows/dspyreg-site.yml"))
    build = workflow["jobs"]["build"]["steps"]
    assert "dspyreg site _site --registry ." in [step.get("run") for step in build]
    upload = next(step for step in build if step.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_site"
    assert workflow["jobs"]["deploy"]["steps"][0]["uses"].startswith("actions/deploy-pages")
    # What the job runs, in a checkout as CI makes one (a clone with a working tree and dspyreg's refs fetched).
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", str(registry), str(checkout)], check=True)
    git(checkout, "fetch", "-q", "origin", "+refs/heads/dspyreg/*:refs/heads/dspyreg/*")
    result = runner.invoke(app, ["site", str(checkout / "_site"), "--registry", str(checkout)])
    assert result.exit_code == 0, result.output
    assert (checkout / "_site/programs/qa/versions/v1.1.html").is_file()
