"""`python -m dspy_registry`: the `dspyreg` command, for a git config that names the interpreter (git-setup)."""

from __future__ import annotations

from .entry import main

main()
