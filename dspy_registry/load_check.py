"""`python -m dspy_registry.load_check BUNDLE_DIR ENTRYPOINT COMMIT`: does program.json load into the bundled code?

Run only by `dspyreg verify --load` (verify.py), as a child process: loading imports the bundle's code, and a
registry is input written by others, so that code never runs in the process that verifies. Exit 0 when it loads;
else exit 1 with the reason as the last line on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from .runtime.inference import load_program

    bundle, entrypoint, commit = argv
    try:
        load_program(Path(bundle), entrypoint, commit)
    except BaseException as err:  # the bundle's code may raise anything, SystemExit included
        sys.stderr.write(f"\n{type(err).__name__}: {' '.join(str(err).split())}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
