"""Setup that a test module's read-only tests share: a copy of the published registry with prod at v1.1, a fake LM,
and an isolated environment of their own, made once per module (per xdist worker when a module is split), so a
`dspyreg serve` over them starts once instead of once per test.

A module-scoped fixture is set up before any test's `isolated_env`, so it isolates itself the same way; the servers
it starts keep that environment, while each test still runs in its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dspy_registry.fake_lm import FakeLM
from dspy_registry.registry import Registry

from .conftest import fake_lm_env
from .serving import Server, dspyreg_serve
from .shared_setup import copy_registry, isolated


@dataclass(frozen=True)
class Shared:
    location: str  # `published_once` copied, prod moved to v1.0 then v1.1 (as the `prod_v11` fixture does)
    fake_lm: FakeLM  # what the servers started from here call
    lm_env: dict[str, str]  # the DSPYREG_LM_* variables that point at it (for a process a test starts itself)
    folder: Path  # for the logs of the servers

    def env(self) -> dict[str, str]:
        """The environment of a process a test starts: the test's own, with the shared LM."""
        return {**os.environ, **self.lm_env}


@contextmanager
def shared_prod_v11(tmp_path_factory: pytest.TempPathFactory, published_once: Path) -> Iterator[Shared]:
    folder = tmp_path_factory.mktemp("shared")
    with FakeLM() as fake, isolated(folder / "home", fake):
        path = copy_registry(published_once, folder / "registry")
        with Registry.open(path) as reg:
            reg.promote("v1.0", "prod")
            reg.promote("v1.1", "prod")
        yield Shared(str(path), fake, fake_lm_env(fake), folder)


def shared_fixture() -> Any:
    """The module-scoped fixture of a test module that shares this setup: `shared = shared_fixture()` in it."""

    @pytest.fixture(scope="module")
    def shared(tmp_path_factory: pytest.TempPathFactory, published_once: Path) -> Iterator[Shared]:
        with shared_prod_v11(tmp_path_factory, published_once) as setup:
            yield setup

    return shared


@contextmanager
def shared_serve(shared: Shared, *args: str) -> Iterator[Server]:
    """`dspyreg serve ARGS` over the shared registry, ready."""
    with dspyreg_serve(shared.location, shared.folder, *args, env=shared.lm_env) as srv:
        srv.wait_ready()
        yield srv
