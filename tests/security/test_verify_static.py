"""Verify without executing: `verify` never imports a bundle's code, `--load` runs it only in a child process, and
an entrypoint must name a module inside the bundle's code/ (never an installed module such as `http.server`)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomlkit
from typer.testing import CliRunner

import dspy_registry
from dspy_registry.bundle import import_program
from dspy_registry.cli import app
from dspy_registry.errors import RegistryError
from dspy_registry.registry import Registry
from dspy_registry.runtime.inference import import_entrypoint
from dspy_registry.verify import VerificationFailed

from ..conftest import git, ref_snapshot
from ..serving import dspyreg_serve

runner = CliRunner()
WHO = ["-c", "user.name=Mallory", "-c", "user.email=m@example.com"]
# Written at import time by the forged code: which process ran it, and the API key it could read.
PAYLOAD = (
    "import os as _os, pathlib as _pl\n"
    "_pl.Path(_os.environ['MARKER']).write_text(f\"{_os.getpid()} {_os.environ.get('DSPYREG_LM_API_KEY')}\")\n"
)
HTTP_SERVER = "http.server:test"  # http.server.test() serves the current folder on 0.0.0.0:8000


def forge(registry: Path, tmp_path: Path, version: str, *, payload: bool = False, entrypoint: str | None = None) -> str:
    """Publish `version` of qa by hand (clone, commit, annotated tag, push), with the manifest's [files] hashes kept
    matching, so the only fault is the payload in code/ or the entrypoint."""
    clone = tmp_path / f"forge-{version}"
    git(tmp_path, "clone", "-q", str(registry), str(clone))
    manifest = tomlkit.parse((clone / "qa/manifest.toml").read_text())
    manifest["program"]["version"] = version  # type: ignore[index]
    if entrypoint is not None:
        manifest["program"]["entrypoint"] = entrypoint  # type: ignore[index]
    if payload:
        code = clone / "qa/code/qa_program.py"
        code.write_text(code.read_text() + PAYLOAD)  # at the end: `from __future__` must stay first
        manifest["files"]["code/qa_program.py"] = hashlib.sha256(code.read_bytes()).hexdigest()  # type: ignore[index]
    (clone / "qa/manifest.toml").write_text(tomlkit.dumps(manifest))
    git(clone, *WHO, "commit", "-qam", f"forge {version}")
    git(clone, *WHO, "tag", "-a", f"qa/{version}", "-m", "forged")
    git(clone, "push", "-q", "origin", "main", f"refs/tags/qa/{version}")
    return git(clone, "rev-parse", "HEAD").strip()


def cli(registry: Registry, *args: str) -> object:
    return runner.invoke(app, [*args, "--registry", registry.location])


def port_8000_listening() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 8000), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "payload-ran"
    monkeypatch.setenv("MARKER", str(path))
    return path


def test_verify_never_runs_a_forged_payload(published: Registry, tmp_path: Path, marker: Path) -> None:
    forge(Path(published.location), tmp_path, "v6.6", payload=True)
    for args in (["--all"], ["v6.6"], []):
        result = cli(published, "verify", *args)
        assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
        assert not marker.exists(), f"verify {args} ran the bundle's code"
    assert published.verify("v6.6") == [] and published.verify(everything=True) == []
    assert not marker.exists()


def test_verify_load_runs_the_code_only_in_a_child(
    published: Registry, tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPYREG_LM_API_KEY", "sk-not-for-registry-code")
    forge(Path(published.location), tmp_path, "v6.6", payload=True)
    result = cli(published, "verify", "--load", "v6.6")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    pid, key = marker.read_text().split()
    assert pid != str(os.getpid())  # it ran, because --load asked, in another process
    assert key == "None"  # loading needs no LM: the child does not get the key


def test_verify_load_reports_a_program_json_that_does_not_load(published: Registry, tmp_path: Path) -> None:
    """program.json lacking a predictor, with the manifest updated to match: only --load can see it."""
    clone = tmp_path / "c"
    git(tmp_path, "clone", "-q", published.location, str(clone))
    state = clone / "qa/program.json"
    state.write_text(state.read_text().replace('"check"', '"checked"', 1))
    manifest = tomlkit.parse((clone / "qa/manifest.toml").read_text())
    manifest["program"]["version"] = "v6.8"  # type: ignore[index]
    manifest["files"]["program.json"] = hashlib.sha256(state.read_bytes()).hexdigest()  # type: ignore[index]
    (clone / "qa/manifest.toml").write_text(tomlkit.dumps(manifest))
    git(clone, *WHO, "commit", "-qam", "rename a predictor")
    git(clone, *WHO, "tag", "-a", "qa/v6.8", "-m", "forged")
    git(clone, "push", "-q", "origin", "main", "refs/tags/qa/v6.8")
    assert published.verify("v6.8") == []
    problems = [str(p) for p in published.verify("v6.8", load=True)]
    assert len(problems) == 1 and problems[0].startswith("qa/v6.8:program.json: does not load"), problems
    assert "lacks ['check']" in problems[0]
    result = cli(published, "verify", "--all", "--load")
    assert result.exit_code == 1 and "qa/v6.8:program.json: does not load" in result.stdout  # type: ignore[attr-defined]
    assert "qa/v1.0" not in result.stdout  # type: ignore[attr-defined]


def test_an_entrypoint_outside_code_fails_verify_without_serving(published: Registry, tmp_path: Path) -> None:
    path = Path(published.location)
    forge(path, tmp_path, "v6.7", entrypoint=HTTP_SERVER)
    for args in (["v6.7"], ["--all"], ["--load", "v6.7"]):
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "dspy_registry.cli", "verify", *args, "--registry", str(path)],
                capture_output=True,
                text=True,
                cwd=tmp_path,
                timeout=120,  # a guard: the payload serves forever
            )
        except subprocess.TimeoutExpired as err:
            raise AssertionError(f"verify {args} did not return: {err.stdout!r} {err.stderr!r}") from None
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"qa/v6.7:manifest.toml: entrypoint '{HTTP_SERVER}'" in proc.stdout, proc.stdout
        assert "Serving HTTP" not in proc.stdout + proc.stderr
        assert not port_8000_listening()
    problems = [str(p) for p in published.verify("v6.7")]
    assert problems == [
        f"qa/v6.7:manifest.toml: entrypoint '{HTTP_SERVER}' does not name a module inside the bundle's code/ "
        "(no code/http/server.py or code/http/server/__init__.py in [files])"
    ]


def test_load_export_and_serve_refuse_an_entrypoint_outside_code(published: Registry, tmp_path: Path) -> None:
    path = Path(published.location)
    forge(path, tmp_path, "v6.7", entrypoint=HTTP_SERVER)
    before = ref_snapshot(path)
    # serve in a child first: before the fix, loading this version served files and never returned.
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "dspy_registry.cli", "serve", "v6.7", "--registry", str(path), "--port", "0"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"serve did not refuse: {err.stderr!r}") from None
    assert proc.returncode == 1 and "entrypoint 'http.server:test'" in proc.stderr, proc.stderr
    with pytest.raises(VerificationFailed, match=r"entrypoint 'http\.server:test'"):
        published.load("v6.7")
    with pytest.raises(VerificationFailed, match=r"entrypoint 'http\.server:test'"):
        dspy_registry.load("qa", "v6.7", registry=path)
    refused = cli(published, "export", "v6.7", str(tmp_path / "out"))
    assert refused.exit_code == 1 and "entrypoint 'http.server:test'" in refused.stderr  # type: ignore[attr-defined]
    assert not (tmp_path / "out").exists()
    assert ref_snapshot(path) == before and not port_8000_listening()


def test_load_without_verify_still_refuses_an_installed_module(published: Registry, tmp_path: Path) -> None:
    """Even with --no-verify, the runtime imports only modules inside the bundle's code/."""
    forge(Path(published.location), tmp_path, "v6.7", entrypoint="email.utils:localtime")
    with pytest.raises(RegistryError, match=r"entrypoint 'email\.utils:localtime'.*code/"):
        published.load("v6.7", verify=False)


def test_serve_does_not_swap_in_an_entrypoint_outside_code(
    published: Registry, tmp_path: Path, fake_lm: object
) -> None:
    path = Path(published.location)
    published.promote("v1.1", "prod")
    forge(path, tmp_path, "v6.7", entrypoint=HTTP_SERVER)
    with dspyreg_serve(published.location, tmp_path, "--poll-seconds", "0.3") as srv:
        srv.wait_ready()
        published.promote("v6.7", "prod")
        deadline = time.time() + 30
        while "not_swapped_in" not in srv.get("/ready")[1] and time.time() < deadline:
            time.sleep(0.1)
        status, ready, _ = srv.get("/ready")
        assert status == 200 and ready["version"] == "v1.1", ready
        assert "entrypoint 'http.server:test'" in ready["not_swapped_in"]["error"]
    assert not port_8000_listening()


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_import_entrypoint_never_falls_back_to_an_installed_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, marker: Path
) -> None:
    """A package on sys.path (not in code/) is refused before it is imported."""
    site = _write(tmp_path / "site", {"evilpkg/__init__.py": "", "evilpkg/payload.py": PAYLOAD + "X = 1\n"})
    monkeypatch.syspath_prepend(str(site))
    code = _write(tmp_path / "bundle" / "code", {"qa_program.py": "X = 1\n"})
    for entrypoint in ("evilpkg.payload:X", "evilpkg:X", "http.server:test"):
        with pytest.raises(ImportError, match=rf"entrypoint '{entrypoint}'.*inside the bundle's code/"):
            import_entrypoint(code, entrypoint, "0" * 40)
    assert not marker.exists()


def test_import_entrypoint_imports_the_bundles_package_not_a_namesake(tmp_path: Path) -> None:
    """code/email/utils.py is the bundle's: importing `email.utils` by name would give the standard library's."""
    import email.utils  # noqa: F401

    code = _write(
        tmp_path / "code",
        {"email/__init__.py": "", "email/utils.py": "def localtime():\n    raise RuntimeError('the bundle copy')\n"},
    )
    with pytest.raises(TypeError, match="the bundle copy"):
        import_entrypoint(code, "email.utils:localtime", "0" * 40)


def test_a_packaged_program_loads_next_to_its_installed_namesake(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pkg.module:Attr` published while `pkg` is imported: load and `verify --load` use the bundle's code/, for each
    version, in the same process as the user's own copy."""
    src = tmp_path / "src"
    program = (
        "import dspy\n\nclass Prog(dspy.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.ask = dspy.Predict('q -> a')\n\n    def forward(self, q):\n        return self.ask(q=q)\n"
    )
    _write(src, {"qapkg/__init__.py": "", "qapkg/prog.py": program})
    monkeypatch.chdir(src)
    monkeypatch.syspath_prepend(str(src))
    source = import_program("qapkg.prog:Prog")
    state = source.program.dump_state()
    registry.publish(source, state, name="qa", version="v1.0")
    (src / "qapkg/prog.py").write_text(program + "\nVERSION = 2\n")
    registry.publish(import_program("qapkg.prog:Prog"), state, name="qa", version="v2.0")
    assert registry.verify(everything=True, load=True) == []
    first, second = registry.load("v1.0"), registry.load("v2.0")
    assert [type(p).__module__ for p in (first, second)] == [
        f"dspyreg_code_{registry.resolve(v).commit[:12]}_qapkg.prog" for v in ("v1.0", "v2.0")
    ]
    assert "VERSION = 2" in Path(sys.modules[type(second).__module__].__file__ or "").read_text()
    assert sys.modules["qapkg.prog"].__file__ == str(src / "qapkg/prog.py")  # the user's copy is untouched


def test_verify_names_an_entrypoint_that_is_not_a_string(published: Registry, tmp_path: Path) -> None:
    clone = tmp_path / "c"
    git(tmp_path, "clone", "-q", published.location, str(clone))
    manifest = tomlkit.parse((clone / "qa/manifest.toml").read_text())
    manifest["program"]["version"], manifest["program"]["entrypoint"] = "v6.9", 7  # type: ignore[index]
    (clone / "qa/manifest.toml").write_text(tomlkit.dumps(manifest))
    git(clone, *WHO, "commit", "-qam", "entrypoint 7")
    git(clone, *WHO, "tag", "-a", "qa/v6.9", "-m", "forged")
    git(clone, "push", "-q", "origin", "main", "refs/tags/qa/v6.9")
    result = cli(published, "verify", "v6.9")
    assert result.exit_code == 1, result.output  # type: ignore[attr-defined]
    assert "qa/v6.9:manifest.toml: entrypoint 7 is not a string" in result.stdout  # type: ignore[attr-defined]


@pytest.mark.parametrize("entrypoint", ["qa_program", "qa_program:", ":DocsQA", "../x:A", "a-b:C", "a..b:C", "a:B.c"])
def test_import_entrypoint_refuses_bad_syntax(tmp_path: Path, entrypoint: str) -> None:
    code = _write(tmp_path / "code", {"qa_program.py": "X = 1\n"})
    with pytest.raises(ImportError, match="entrypoint"):
        import_entrypoint(code, entrypoint, "0" * 40)
