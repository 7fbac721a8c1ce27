"""Regenerate docs/img/ui-*.png: run the browser tests with DSPYREG_SCREENSHOTS_TO=docs/img, so the screenshots in
docs/ui.md and README are the pages the tests checked. Needs Chromium (scripts/install-browser.sh).

Usage::

    python scripts/screenshots.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    env = {**os.environ, "DSPYREG_SCREENSHOTS_TO": str(ROOT / "docs" / "img"), "DSPYREG_REQUIRE_BROWSER": "1"}
    test = "tests/test_ui_browser.py::test_live_view_shows_every_page"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", test], cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
