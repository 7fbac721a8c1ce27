"""The `dspyreg` console script: Ctrl-C is handled before anything heavy is imported, so an interrupt at any
moment ends with a one-line message and exit 130, never a traceback (see interrupts.py)."""

from __future__ import annotations

import signal
import sys

from . import interrupts


def main() -> None:
    interrupts.install()
    try:
        args = sys.argv[1:]
        if len(args) == 2 and args[0] == "textconv" and not args[1].startswith("-"):
            # git runs the diff driver once per file version: skip typer and rich (textconv.py).
            from .textconv import main as textconv_main

            raise SystemExit(textconv_main(args[1:]))
        from .cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:  # outside a command's own funnel: while starting up or parsing arguments
        sys.stderr.write("interrupted: nothing was changed\n")
        raise SystemExit(130) from None
    finally:
        # The command has said what happened: a Ctrl-C while the interpreter shuts down must not turn that into a
        # death by signal (Python resets its own handlers then, but leaves an ignored signal ignored).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
