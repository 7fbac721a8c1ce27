"""`dspyreg serve ENV --canary OTHER_ENV=PERCENT`: a share of the calls answered by the version another environment
holds.

Two followers (serve.FollowingBackend), one per environment, each polling its own tag and swapping its own version:
a promote to OTHER_ENV swaps the canary side only, a promote to ENV the main side only. SplitBackend puts them
behind the one Backend that both doors (REST and gRPC) serve, and `pick` chooses the side of each call:

- with a key (the --canary-header header, or the same name in lowercase as gRPC metadata), sticky:
  sha256(key) mod 10000 < PERCENT * 100 lands on the canary, so one caller stays on one side for a given PERCENT
  (and raising PERCENT only moves callers from main to canary, never back);
- without a key, at random per call (DSPYREG_CANARY_SEED seeds it, to make a run reproducible).

A batch is one call: all its inputs go to one side. The canary answers only while it holds a version and its
interface (interface.json: the inputs and outputs that REST validates and the .proto is generated from) is the main
side's; otherwise every call goes to the main side and /ready and /version say why. So a client built for the main
side's request (or its .proto) never meets another shape, whichever environment moved first. The split itself has
no heavy imports: the CLI validates --canary with `parse_canary` before anything is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .errors import RegistryError

if TYPE_CHECKING:
    from .runtime.inference import PipelineServer

log = logging.getLogger("dspyreg.serve")
DEFAULT_KEY_HEADER = "X-Dspyreg-Key"
SEED_ENV = "DSPYREG_CANARY_SEED"
BUCKETS = 10_000  # a key's place on the split, in hundredths of a percent


class Side(Protocol):
    """One side of the split: serve.FollowingBackend, following one environment (handed in: this module does not
    reach up to serve.py)."""

    program: str
    environment: str | None
    prepare: Callable[[PipelineServer], None] | None

    def current(self) -> PipelineServer | None: ...

    def status(self) -> dict[str, Any]: ...

    def holds_version(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class CanarySpec:
    """What --canary asks: the environment whose version takes `percent` of the calls, sticky per caller by the value
    of the header `key_header`."""

    environment: str
    percent: float
    key_header: str = DEFAULT_KEY_HEADER


def parse_canary(
    text: str, environments: Sequence[str], served: str | None, key_header: str = DEFAULT_KEY_HEADER
) -> CanarySpec:
    """`ENV=PERCENT` checked against the registry's environments and the one served (and the key's header name, one
    that HTTP and gRPC metadata both carry); RegistryError otherwise."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}", key_header) or key_header.lower().endswith("-bin"):
        raise RegistryError(f"--canary-header {key_header!r}: expected a header name such as {DEFAULT_KEY_HEADER}")
    env, sep, share = text.partition("=")
    env, share = env.strip(), share.strip()
    if not sep or not env or not share:
        raise RegistryError(f"--canary {text!r}: expected ENV=PERCENT, e.g. --canary staging=10")
    if env not in environments:
        raise RegistryError(
            f"--canary {text!r}: {env!r} is not one of this registry's environments: {', '.join(environments)}"
        )
    if env == served:
        raise RegistryError(f"--canary {text!r}: {env!r} is the environment being served; name another one")
    try:
        percent = float(share)
    except ValueError:
        percent = math.nan
    if not (0 < percent <= 100):  # nan fails too
        raise RegistryError(f"--canary {text!r}: PERCENT must be a number above 0 and at most 100")
    return CanarySpec(env, percent, key_header)


def in_canary(key: str, percent: float) -> bool:
    """Whether the caller with `key` lands on the canary side: the same key, the same side, for a given percent."""
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % BUCKETS
    return bucket < percent * (BUCKETS / 100)


class SplitBackend:
    """The main side's follower and the canary's, served as one backend whose `pick` chooses a side per call."""

    def __init__(self, main: Side, canary: Side, percent: float, key_header: str = DEFAULT_KEY_HEADER) -> None:
        self.main, self.canary, self.percent, self.key_header = main, canary, percent, key_header
        self.program = main.program
        self.environment = main.environment
        seed = os.environ.get(SEED_ENV)
        self._random = random.Random(seed) if seed else random.SystemRandom()
        self._random_lock = threading.Lock()  # random.Random is not safe to share between threads unlocked
        self._checked: tuple[PipelineServer, PipelineServer, str | None] | None = None  # (main, canary, why not)

    # -- what the doors ask ------------------------------------------------------------------------------------------
    def current(self) -> PipelineServer | None:
        """The main side: what readiness, /docs, gRPC health and reflection describe."""
        return self.main.current()

    def pick(self, key: str | None) -> PipelineServer | None:
        """The version that answers one call from the caller with `key` (None: no key, a random side)."""
        main = self.main.current()
        canary = self.canary.current()
        if canary is None or main is None or self._paused(main, canary) is not None:
            return main
        if key:
            return canary if in_canary(key, self.percent) else main
        with self._random_lock:
            draw = self._random.random() * 100
        return canary if draw < self.percent else main

    def status(self) -> dict[str, Any]:
        return {**self.main.status(), "canary": self.canary_status()}

    def canary_status(self) -> dict[str, Any]:
        """The canary side as /ready and /version show it: its version, its share, and why it is not answering."""
        main, canary = self.main.current(), self.canary.current()
        side = self.canary.status()
        body: dict[str, Any] = {
            "environment": self.canary.environment,
            "percent": self.percent,
            "key_header": self.key_header,
            "version": side["version"],
            "commit": side["commit"],
        }
        paused = (
            f"{self.canary.environment} holds no version that could be loaded"
            if canary is None
            else None
            if main is None
            else self._paused(main, canary)
        )
        body["active"] = main is not None and canary is not None and paused is None
        if paused is not None:
            body["paused"] = paused
        if "not_swapped_in" in side:
            body["not_swapped_in"] = side["not_swapped_in"]
        return body

    def _paused(self, main: PipelineServer, canary: PipelineServer) -> str | None:
        """Why the canary must not answer beside `main` (None: it may); worked out once per pair of versions."""
        checked = self._checked
        if checked is not None and checked[0] is main and checked[1] is canary:
            return checked[2]
        why = None
        if canary.interface != main.interface:
            why = (
                f"{canary.name} {canary.version} ({self.canary.environment}) has another interface than "
                f"{main.version} ({self.environment}): every call goes to {main.version} until they match"
            )
        self._checked = (main, canary, why)
        event = "canary_paused" if why else "canary_active"
        log.warning(
            json.dumps(
                {
                    "event": event,
                    "main": main.version,
                    "canary": canary.version,
                    "percent": self.percent,
                    **({"reason": why} if why else {}),
                }
            )
        )
        return why

    # -- following ---------------------------------------------------------------------------------------------------
    @property
    def prepare(self) -> Callable[[PipelineServer], None] | None:
        return self.main.prepare

    @prepare.setter
    def prepare(self, hook: Callable[[PipelineServer], None] | None) -> None:
        self.main.prepare = self.canary.prepare = hook

    def start(self) -> None:
        self.main.start()
        self.canary.start()
        if not self.canary.holds_version():
            log.warning(
                json.dumps(
                    {
                        "event": "canary_waiting",
                        "environment": self.canary.environment,
                        "detail": f"{self.canary.environment} holds no version of {self.program}: "
                        f"serving {self.environment or 'the main side'} only until it does",
                    }
                )
            )

    def stop(self) -> None:
        self.main.stop()
        self.canary.stop()
