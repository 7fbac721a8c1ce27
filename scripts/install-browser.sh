#!/usr/bin/env bash
# What the browser tests (tests/test_ui_browser.py) need beyond pip: Debian's Chromium, which Playwright drives through
# its executable_path (Playwright never downloads a browser here). Idempotent; needs root (or sudo) to install.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
run=""
if [ "$(id -u)" -ne 0 ]; then run="sudo"; fi
$run apt-get update -qq
DEBIAN_FRONTEND=noninteractive $run apt-get install -y -qq --no-install-recommends chromium
/usr/bin/chromium --version
