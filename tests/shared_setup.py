"""Setup made once and shared by many tests (test_doors, test_zoo, test_canary): made in an isolated environment like
a test's, since a fixture wider than a test is set up before that test's own isolation (conftest.isolated_env)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dspy_registry.fake_lm import FakeLM

from .conftest import fake_lm_env, isolate, once_per_run


@contextmanager
def isolated(home: Path, lm: FakeLM | None = None) -> Iterator[None]:
    """HOME, git's identity and the bundle cache under `home` (and the LM settings of `lm`), as in a test, until the
    block ends; a server started in the block keeps them."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate(monkeypatch, home)
        for key, value in (fake_lm_env(lm) if lm is not None else {}).items():  # as conftest's fake_lm
            monkeypatch.setenv(key, value)
        yield


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """conftest.once_per_run, with `make(folder)` run in an isolated environment whose HOME is folder/home."""

    def isolated_make(folder: Path) -> None:
        with isolated(folder / "home"):
            make(folder)

    return once_per_run(tmp_path_factory, name, isolated_make)


def copy_registry(source: Path, to: Path) -> Path:
    """A registry of its own for the tests that change it: a copy of `source` (a bare repository) at `to`."""
    shutil.copytree(source, to, symlinks=True)
    return to
