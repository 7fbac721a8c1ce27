"""Paths read from a registry: a forged version whose tree holds `..`, `.git`, symlinks, submodules or absolute
names (with matching hashes in its manifest) is refused by verify, export, load, serve and sync, naming the entry,
and nothing is written anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.errors import RegistryError
from dspy_registry.registry import Registry, cache_dir

from ..conftest import publish_example, ref_snapshot
from .forge import files_named, forge_version, plumb

runner = CliRunner()
PAYLOAD = f"payload-{uuid.uuid4().hex[:12]}.py"
EVIL = b"import os\nos.system('echo owned')\n"

# id -> (path components of the forged entry, its mode, how the refusal shows it, why)
CASES: dict[str, tuple[tuple[str, ...], str, str, str]] = {
    "dotdot": (("..", PAYLOAD), "100644", f"../{PAYLOAD}", "path traversal"),
    "dot": ((".", PAYLOAD), "100644", f"./{PAYLOAD}", "path traversal"),
    "dotgit": (("code", ".GiT", PAYLOAD), "100644", f"code/.GiT/{PAYLOAD}", "a .git component"),
    "empty": (("code", "", PAYLOAD), "100644", f"code//{PAYLOAD}", "an empty component"),
    "backslash": ((f"code\\..\\..\\{PAYLOAD}",), "100644", f"code\\..\\..\\{PAYLOAD}", "a backslash"),
    "symlink": (("code", PAYLOAD), "120000", f"code/{PAYLOAD}", "a symbolic link"),
    "submodule": (("code", PAYLOAD), "160000", f"code/{PAYLOAD}", "a submodule"),
}


def forge(reg: Registry, case: str, tmp_path: Path) -> tuple[str, str]:
    """qa v9.0 published by hand with the case's entry; (the forged commit, the refusal's text)."""
    repo = reg.store.git_dir
    parts, mode, shown, why = CASES[case]
    content = EVIL
    if mode == "120000":
        content = str(tmp_path.parent).encode()  # a link out of the bundle
    elif mode == "160000":
        content = plumb(repo, "rev-parse", "refs/heads/main").encode()
    commit = forge_version(repo, {parts: (mode, content)})
    reg.store.close()  # the next read sees the forged refs
    return commit, f"qa/v9.0: tree entry '{shown}' is not allowed ({why})"


def forge_absolute(reg: Registry, tmp_path: Path) -> tuple[str, str]:
    """An entry whose name holds slashes and starts with one: joined to a folder, it names an absolute path."""
    target = tmp_path / PAYLOAD
    commit = forge_version(reg.store.git_dir, {(str(target),): ("100644", EVIL)})
    reg.store.close()
    return commit, f"qa/v9.0: tree entry '{target}' is not allowed (absolute path)"


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary files and the working directory inside tmp_path, so a stray write is found there."""
    (tmp_path / "tmp").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


def stray(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Every payload file anywhere under the test run's temporary root (tmp_path, HOME, the cache, cwd, temp)."""
    return files_named(PAYLOAD, tmp_path_factory.getbasetemp())


def forged(reg: Registry, case: str, tmp_path: Path) -> tuple[str, str]:
    return forge_absolute(reg, tmp_path) if case == "absolute" else forge(reg, case, tmp_path)


ALL = [*CASES, "absolute"]


@pytest.mark.parametrize("case", ALL)
def test_verify_names_the_entry_and_writes_nothing(
    published: Registry, case: str, sandbox: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _, refusal = forged(published, case, sandbox)
    before = ref_snapshot(Path(published.location))
    for args in (["qa/v9.0"], ["--all"]):
        result = runner.invoke(app, ["verify", *args, "--registry", published.location])
        assert result.exit_code == 1, result.output
        assert f"problem: {refusal}" in result.stdout
    assert stray(tmp_path_factory) == []
    assert ref_snapshot(Path(published.location)) == before
    assert published.verify("v1.1") == []  # the sound versions stay sound


@pytest.mark.parametrize("case", ALL)
def test_export_refuses_even_unverified(
    published: Registry, case: str, sandbox: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _, refusal = forged(published, case, sandbox)
    dest = sandbox / "out" / "deploy"
    dest.parent.mkdir()
    for extra in ([], ["--no-verify"]):
        result = runner.invoke(app, ["export", "qa/v9.0", str(dest), *extra, "--registry", published.location])
        assert result.exit_code == 1, result.output
        assert refusal in " ".join(result.stderr.split())
        assert not dest.exists() and list(dest.parent.iterdir()) == []
    assert stray(tmp_path_factory) == []


@pytest.mark.parametrize("case", ALL)
def test_load_materialize_and_serve_refuse(
    published: Registry, case: str, sandbox: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    commit, refusal = forged(published, case, sandbox)
    published.promote("v9.0", "prod")  # the tag is honest: only the tree is forged
    for call in (
        lambda: published.load("prod"),
        lambda: published.load("prod", verify=False),
        lambda: published.materialize(published.resolve("v9.0")),
    ):
        with pytest.raises(RegistryError) as caught:
            call()
        assert refusal in str(caught.value)
    result = runner.invoke(app, ["serve", "prod", "--registry", published.location])
    assert result.exit_code == 1 and refusal in " ".join(result.stderr.split()), result.output
    assert not (cache_dir() / "bundles").exists() or files_named(commit, cache_dir() / "bundles") == []
    assert stray(tmp_path_factory) == []


@pytest.mark.parametrize(
    ("parts", "mode", "shown", "why"),
    [
        (("code", "GIT~1", "hooks.py"), "100644", "code/GIT~1/hooks.py", "a .git component"),
        (("code", ".g\u200cit", "x.py"), "100644", "code/.g\\u200cit/x.py", "a control character"),
        (("code", ".git. ", "x.py"), "100644", "code/.git. /x.py", "a .git component"),
        (("code", "a\nb.py"), "100644", "code/a\\nb.py", "a control character"),
        (("code", "x.py"), "100664", "code/x.py", "mode 100664"),
        (("code", "sub/x.py"), "100644", "code/sub/x.py", "a slash in a name"),
    ],
)
def test_list_bundle_checks_every_name_and_mode(
    published: Registry, parts: tuple[str, ...], mode: str, shown: str, why: str
) -> None:
    sound = published.resolve("v1.1")
    listed = published.store.list_bundle(sound.commit, "qa/")
    ls_tree = plumb(published.store.git_dir, "ls-tree", "-r", "--name-only", sound.commit, "--", "qa/").split()
    assert [f"qa/{e.path}" for e in listed] == sorted(ls_tree) and {e.mode for e in listed} == {"100644"}
    commit = forge_version(published.store.git_dir, {parts: (mode, EVIL)})
    with pytest.raises(RegistryError) as caught:
        published.store.list_bundle(commit, "qa/", where="qa/v9.0")
    assert str(caught.value) == f"qa/v9.0: tree entry '{shown}' is not allowed ({why})"


def test_a_bundle_cached_before_the_check_is_not_used(published: Registry, sandbox: Path) -> None:
    """A cache folder for the forged commit (as an older dspyreg would have left it) does not skip the check."""
    from dspy_registry import __version__
    from dspy_registry.delivery import BUNDLE_LAYOUT

    commit, refusal = forge(published, "dotdot", sandbox)
    published.export(
        published.resolve("v1.1"), cache_dir() / "bundles" / f"{__version__}-{BUNDLE_LAYOUT}" / commit / "qa"
    )
    with pytest.raises(RegistryError) as caught:
        published.load("v9.0", verify=False)
    assert refusal in str(caught.value)


def test_export_writes_only_inside_its_folder(published: Registry, sandbox: Path) -> None:
    """Defense in depth: the writer itself refuses a path that resolves outside the destination."""
    from dspy_registry.export import write_inside

    with pytest.raises(RegistryError, match=r"outside"):
        write_inside(sandbox / "dest", {f"../{PAYLOAD}": b"x"})
    assert not (sandbox / PAYLOAD).exists()
    (sandbox / "elsewhere").mkdir()
    (sandbox / "dest").mkdir()
    (sandbox / "dest" / "code").symlink_to(sandbox / "elsewhere")
    with pytest.raises(RegistryError, match=r"outside"):
        write_inside(sandbox / "dest", {f"code/{PAYLOAD}": b"x"})
    assert list((sandbox / "elsewhere").iterdir()) == []


# -- a remote on a real git daemon -------------------------------------------------------------------------------------
def cli(url: str, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DSPYREG_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "dspy_registry.cli", *args, "--registry", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("case", ["dotdot", "dotgit", "symlink"])
def test_a_forged_version_on_a_remote_is_refused(
    daemon: str,
    case: str,
    states: dict[str, Path],
    sandbox: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Pushed to a git daemon (which takes it): a fresh machine's fetch refuses the objects (git's fsck); the
    machine that made them refuses the version when it reads it."""
    monkeypatch.setenv("DSPYREG_CACHE", str(sandbox / "cache-a"))
    Registry.init(daemon).close()
    with Registry.open(daemon) as reg:
        publish_example(reg, states["v1.0"], "v1.0")
        publish_example(reg, states["v1.1"], "v1.1")
        _, refusal = forge(reg, case, sandbox)
        plumb(reg.store.git_dir, "push", "-q", daemon, "refs/heads/main", "refs/tags/qa/v9.0")

    fresh = cli(daemon, sandbox / "cache-b", "verify", "--all")
    assert fresh.returncode == 1, fresh.stdout + fresh.stderr
    lines = fresh.stderr.strip().splitlines() if case != "symlink" else fresh.stdout.strip().splitlines()
    if case == "symlink":  # git's fsck allows links: dspyreg's own check names it
        assert f"problem: {refusal}" in " ".join(fresh.stdout.split())
    else:
        assert len(lines) == 1 and "refuses" in lines[0] and "qa/v9.0" not in lines[0], lines
        assert "hasDot" in lines[0]
        remotes = list((sandbox / "cache-b" / "remotes").iterdir())
        assert all(plumb(r, "for-each-ref", "refs/tags/qa/v9.0") == "" for r in remotes)
    for args in (["verify", "qa/v9.0"], ["export", "qa/v9.0", str(sandbox / "out"), "--no-verify"]):
        made_it = cli(daemon, sandbox / "cache-a", *args)
        assert made_it.returncode == 1 and refusal in " ".join((made_it.stdout + made_it.stderr).split())
    assert not (sandbox / "out").exists()
    assert stray(tmp_path_factory) == []
