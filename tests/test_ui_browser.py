"""`dspyreg ui` and `dspyreg site` in a real headless Chromium (Debian's, through Playwright's executable_path): every
page kind on an example registry, its content, no console error, no horizontal overflow at 1280 and 390 pixels.

Screenshots of each page go under the test's tmp folder; with DSPYREG_SCREENSHOTS_TO set (scripts/screenshots.py)
the live view's are also written there (viewport only) for docs/ui.md. Without Chromium the tests skip with one
line, unless CI or DSPYREG_REQUIRE_BROWSER is set: there a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.registry import Registry

from .conftest import ROOT, fake_lm_env, isolate, once_per_run, publish_example, ref_snapshot
from .serving import Server, free_port

CHROMIUM = Path(os.environ.get("DSPYREG_CHROMIUM", "/usr/bin/chromium"))
WIDTHS = (1280, 390)
METRIC = f"{ROOT / 'examples' / 'metric.py'}:answer_match"
runner = CliRunner()


def _browser_or_skip() -> Any:
    required = bool(os.environ.get("CI") or os.environ.get("DSPYREG_REQUIRE_BROWSER"))
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "the playwright package is not installed (pip install -e '.[test]')"
    if problem is None and not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        problem = f"no Chromium at {CHROMIUM} (scripts/install-browser.sh installs Debian's)"
    if problem is not None:
        if required:
            pytest.fail(f"browser tests are required here (CI or DSPYREG_REQUIRE_BROWSER is set) but {problem}")
        pytest.skip(f"browser tests skipped: {problem}")
    return sync_playwright


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module's tests (each opens its own page)."""
    sync_playwright = _browser_or_skip()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def cli(registry: Registry, *args: str, env: dict[str, str] | None = None) -> Any:
    result = runner.invoke(app, [*args, "--registry", registry.location], env=env)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="session")
def example_once(tmp_path_factory: pytest.TempPathFactory, published_once: Path, states: dict[str, Path]) -> Path:
    """qa v1.0, v1.1 (a new instruction), v1.2; an eval and a bench of v1.1; prod v1.0 -> v1.1 then rolled back;
    staging v1.2. Made once per run (xdist's workers share it) in an isolated environment like a test's."""
    from dspy_registry.fake_lm import FakeLM

    def make(folder: Path) -> None:
        shutil.copytree(published_once, folder / "registry", symlinks=True)
        inputs = folder / "dev.jsonl"
        inputs.write_text("".join(f'{{"question": "q{i}?", "answer": "JSON"}}\n' for i in range(3)))
        with pytest.MonkeyPatch.context() as monkeypatch:
            isolate(monkeypatch, folder / "home")
            with Registry.open(folder / "registry") as reg, FakeLM() as fake:
                publish_example(reg, states["v1.1"], "v1.2", optimizer="MIPROv2", dev_score=0.75, trainset_size=9)
                fake.overrides["answer"] = "JSON"  # every answer matches: eval score 1.0
                lm = fake_lm_env(fake)
                cli(reg, "eval", "v1.1", "--devset", str(inputs), "--metric", METRIC, env=lm)
                cli(reg, "bench", "v1.1", "--inputs", str(inputs), "-n", "3", env=lm)
                reg.promote("v1.0", "prod", reason="first release")
                reg.promote("v1.1", "prod", reason="better instruction")
                reg.rollback("prod", reason="answers too long")
                reg.promote("v1.2", "staging")

    return once_per_run(tmp_path_factory, "ui-example", make) / "registry"


@pytest.fixture(scope="module")
def example(example_once: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A copy of `example_once` for the module's tests, which only read it, in a HOME of the module's own that stays
    in force while they run (each test's own isolation comes on top)."""
    folder = tmp_path_factory.mktemp("example")
    shutil.copytree(example_once, folder / "registry", symlinks=True)
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate(monkeypatch, folder / "home")
        with Registry.open(folder / "registry") as reg:
            yield reg


@pytest.fixture(scope="module")
def live(example: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `dspyreg ui` process on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("ui") / "ui.log"
    command = [sys.executable, "-m", "dspy_registry.cli", "ui", "--registry", example.location, "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        server.wait_listening()
        yield server.base + "/"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


class Visit:
    """One browser page, sized to each width in turn, with every console error and uncaught exception collected."""

    def __init__(self, browser: Any, base: str, shots: Path) -> None:
        self.base, self.shots = base, shots
        self.errors: list[str] = []
        self.path = ""
        self.page = browser.new_page(viewport={"width": WIDTHS[0], "height": 900})
        self.page.on("console", lambda m: self.errors.append(f"{self.path}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"{self.path}: {e}"))

    def each_width(self, path: str, kind: str) -> Any:
        """Open `path` at every width: no horizontal overflow, a screenshot each; the page is left at the first
        width (1280 pixels)."""
        page = self.page
        for width in reversed(WIDTHS):  # the first width last: the caller goes on at it
            page.set_viewport_size({"width": width, "height": 900})
            self.path = path
            response = page.goto(self.base + path)
            assert response is not None and response.ok, f"{path}: {response and response.status}"
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} overflows {overflow} px at {width} px wide"
            shot = self.shots / f"{kind}-{width}.png"
            page.screenshot(path=str(shot), full_page=True)
            if (docs := os.environ.get("DSPYREG_SCREENSHOTS_TO")) and self.shots.name == "live":
                Path(docs).mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(Path(docs) / f"ui-{kind}-{width}.png"))
        return page


def check_every_page(visit: Visit, *, live: bool) -> None:
    index = visit.each_width("index.html", "programs")
    assert index.locator("a.card.program h2").all_inner_texts() == ["qa"]

    program = visit.each_width("programs/qa.html", "program")
    rows = program.locator("table.versions tbody tr td:first-child").all_inner_texts()
    assert [r.split()[0] for r in rows] == ["v1.2", "v1.1", "v1.0"]
    envs = dict(li.split(maxsplit=1) for li in program.locator(".env-list li").all_inner_texts())
    assert envs == {"staging": "v1.2", "prod": "v1.0", "rollback": "unset"}
    charts = program.locator("svg.chart")
    assert charts.count() == 3
    score = charts.nth(0)
    assert score.locator('circle.point[data-series="dev score"]').count() == 3  # one point per version
    assert [
        score.locator('circle.point[data-series="dev score"]').nth(i).get_attribute("data-version") for i in range(3)
    ] == ["v1.0", "v1.1", "v1.2"]
    assert score.locator('circle.point[data-series="latest eval"]').count() == 1  # only v1.1 was evaluated
    assert charts.nth(1).locator('circle.point[data-series="p50"]').count() == 1  # only v1.1 was benched
    assert set(score.locator("text.env-label").all_text_contents()) == {"prod", "staging"}

    version = visit.each_width("programs/qa/versions/v1.1.html", "version")
    assert "COPRO" in version.locator("table.kv").nth(1).inner_text()  # [optimization]
    assert "question" in version.locator("table.fields").first.inner_text()
    assert version.locator(".predictor").count() == 3
    assert version.locator(".card.demo").count() > 0
    assert (
        "Using only facts stated in the passages" in version.locator("#p-answer\\.predict .instructions").inner_text()
    )
    assert version.locator("details.rendered").count() == 3
    assert "answer_match" in version.locator("table.records").first.inner_text()

    diff = visit.each_width("programs/qa/diff/v1.0..v1.1.html", "diff")
    changed = diff.locator("#p-answer\\.predict")
    assert "Using only facts stated in the passages" in changed.locator(".after ins").all_inner_texts()[0]
    assert any("Be concise" in d for d in changed.locator(".before del").all_inner_texts())
    assert "dev_score" in diff.locator("table.sides").first.inner_text()

    # The pickers (the page goes on from the diff): the live view renders any pair; the static site goes only
    # to pages it wrote.
    diff.select_option("select[name=a]", "v1.2")  # v1.2..v1.1: neither consecutive, held, nor a journaled move
    if live:
        diff.wait_for_url("**/diff/v1.2..v1.1.html")
        assert "v1.2 → v1.1" in diff.locator("h1").inner_text()
    else:
        assert "holds no page for v1.2..v1.1" in diff.locator(".picker-note").inner_text()
        diff.select_option("select[name=b]", "v1.2")  # v1.2..v1.2: no page either, so no navigation yet
        diff.select_option("select[name=a]", "v1.0")  # what prod and staging hold: pre-rendered
        diff.wait_for_url("**/diff/v1.0..v1.2.html")
        assert "v1.0 → v1.2" in diff.locator("h1").inner_text()

    journal = visit.each_width("programs/qa/journal.html", "journal")
    prod = journal.locator("section.lane.env-prod li.move").all_inner_texts()
    assert len(prod) == 3 and "rollback" in prod[0] and "answers too long" in prod[0]
    assert "v1.2" in journal.locator("section.lane.env-staging").inner_text()
    assert visit.errors == []


@pytest.mark.slow
def test_live_view_shows_every_page(browser: Any, live: str, tmp_path: Path) -> None:
    shots = tmp_path / "live"
    shots.mkdir()
    visit = Visit(browser, live, shots)
    try:
        check_every_page(visit, live=True)
    finally:
        visit.page.close()
    assert len(list(shots.glob("*.png"))) == 2 * 5


@pytest.mark.slow
def test_static_site_works_from_file_urls(browser: Any, example: Registry, tmp_path: Path) -> None:
    before = ref_snapshot(Path(example.location))
    site = tmp_path / "site"
    cli(example, "site", str(site))
    assert ref_snapshot(Path(example.location)) == before  # read-only
    shots = tmp_path / "static"
    shots.mkdir()
    visit = Visit(browser, site.as_uri() + "/", shots)
    try:
        check_every_page(visit, live=False)
    finally:
        visit.page.close()


def test_browser_tests_are_required_in_ci(tmp_path: Path) -> None:
    """Without a browser, a browser test fails where one is required and skips elsewhere (the two runs at once)."""
    test = f"{__file__}::test_live_view_shows_every_page"
    no_browser = {**os.environ, "DSPYREG_CHROMIUM": "/nonexistent/chromium"}
    runs = {
        "required": {**no_browser, "DSPYREG_REQUIRE_BROWSER": "1"},
        "optional": {k: v for k, v in no_browser.items() if k not in ("DSPYREG_REQUIRE_BROWSER", "CI")},
    }
    procs = {
        name: subprocess.Popen(
            # its own --basetemp: pytest would otherwise prune the shared base's old runs
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / name}", test],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for name, env in runs.items()
    }
    out = {name: proc.communicate(timeout=120)[0] for name, proc in procs.items()}
    required, optional = procs["required"], procs["optional"]
    assert required.returncode != 0 and "browser tests are required here" in out["required"], out["required"][-2000:]
    assert optional.returncode == 0 and "1 skipped" in out["optional"], out["optional"][-2000:]
