"""Ctrl-C and the point of no return.

A write prepares everything first and then moves refs in one transaction (gitstore.py). Before that moment an
interrupt cancels the command and nothing has landed; from the moment the transaction starts (`commit_point`) the
`dspyreg` command holds the interrupt, so it can finish and report what landed instead of claiming it was cancelled.
Only the CLI installs the handler: a library caller's Ctrl-C behaves as Python's default. This module imports
nothing but `signal`, so the console script (entry.py) can install the handler before anything heavy loads.
"""

from __future__ import annotations

import signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any


class _State:
    committing = False  # a ref transaction has started in this command
    held = False  # an interrupt arrived after that and was held
    in_command = False  # inside a command's error funnel, which reports the interrupt itself
    cancelled = False  # an interrupt arrived before that: the command is cancelled, whatever caught it on the way


def commit_point() -> None:
    """Called right before refs move: from here on the command's outcome is what the transaction did.

    An interrupt that arrived earlier but was swallowed on its way up (raised inside a `__del__`, or caught and
    wrapped by a library the command called) cancels the command here, before anything lands."""
    if _State.cancelled and not _State.committing:
        raise KeyboardInterrupt
    _State.committing = True


def committed_then_interrupted() -> bool:
    """An interrupt arrived after the command's ref transaction started (and was held until now)."""
    return _State.held


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    if _State.committing:
        _State.held = True
        return
    if _State.in_command:
        _State.cancelled = True
        raise KeyboardInterrupt
    # Starting up or parsing arguments, where click would swallow KeyboardInterrupt silently. Recorded too: should
    # the exit be swallowed on its way up (inside a `__del__`), the command's commit point still cancels it.
    import sys

    _State.cancelled = True
    sys.stderr.write("interrupted: nothing was changed\n")
    raise SystemExit(130)


def _quiet_unraisable(unraisable: Any) -> None:
    """An interrupt raised where Python cannot propagate it (a `__del__`, a weakref callback) is not a crash to
    print: it was recorded as cancelling the command, and `commit_point` acts on it."""
    if isinstance(unraisable.exc_value, (KeyboardInterrupt, SystemExit)) and _State.cancelled:
        return
    _quiet_unraisable.previous(unraisable)  # type: ignore[attr-defined]


def install() -> Any:
    """From now on in this process, SIGINT interrupts until a commit point and is held after it. Returns the
    previous handler (None outside the main thread, where Python allows no handler). An interrupt already recorded
    (while starting up) stays recorded until the command ends."""
    _State.committing = _State.held = False
    import sys

    if sys.unraisablehook is not _quiet_unraisable:
        _quiet_unraisable.previous = sys.unraisablehook  # type: ignore[attr-defined]
        sys.unraisablehook = _quiet_unraisable
    try:
        return signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread (e.g. a test runner's worker): leave Python's default
        return None


class hold_after_commit:
    """One CLI command: interrupts until its commit point, held after; the previous handler restored on exit."""

    def __enter__(self) -> None:
        self._previous = install()
        _State.in_command = True

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        # `committing` stays set: the console script's handler keeps holding Ctrl-C while the process exits.
        cancelled = _State.cancelled and not _State.committing
        _State.in_command = _State.cancelled = False
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        if cancelled and isinstance(error, Exception):
            # A library caught the interrupt and raised its own error (pydantic: RuntimeError): nothing landed.
            raise KeyboardInterrupt from None
