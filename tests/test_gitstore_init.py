"""`dspyreg init` makes its repository with git itself: branch main, bare or not, and no GitPython import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import git

PROBE = """
import sys
from dspy_registry.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
print("GITPYTHON=" + str("git" in sys.modules))
"""


@pytest.mark.parametrize("bare", [True, False])
def test_init_makes_a_main_branch_repository_without_gitpython(tmp_path: Path, bare: bool) -> None:
    target = tmp_path / "nested" / "registry"
    flags = ["--bare" if bare else "--worktree"]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "init", str(target), *flags], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rsplit("GITPYTHON=", 1)[1].strip() == "False"
    assert git(target, "rev-parse", "--is-bare-repository").strip() == str(bare).lower()
    assert git(target, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert git(target, "log", "--format=%s", "main").strip() == "Initialize dspyreg registry"
    assert (target / "registry.toml").is_file() is not bare  # a checkout shows the template; a bare one has none
