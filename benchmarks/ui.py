"""How fast `dspyreg ui` serves a program page of a 1,000-version registry (issue target: under 0.5 s).

Usage::

    python benchmarks/ui.py [--versions 1000] [--repeats 7]

Builds the registry as benchmarks/registry_scale.py does (N-1 versions by git fast-import in exactly the format
`dspyreg publish` writes, the newest by a real publish, then gc), promotes two versions so the charts carry
environment marks, starts a real `dspyreg ui` on a free loopback port and times GET programs/qa.html end to end
(the first request, then the median of the next ones). Prints one line per figure; writes nothing outside a temp
folder.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from harness import dspyreg, free_port, run
from registry_scale import PROGRAM, build_dspyreg, real_bundle, version_of

TARGET_SECONDS = 0.5


def fetch(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        body: bytes = response.read()
    return time.perf_counter() - started, body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dspyreg-ui-bench-") as tmp:
        work = Path(tmp)
        path = work / "registry"
        build_dspyreg(path, args.versions, real_bundle(work))
        run(dspyreg("promote", f"{PROGRAM}/{version_of(args.versions // 2)}", "--to", "prod", "--registry", path))
        run(dspyreg("promote", f"{PROGRAM}/{version_of(args.versions - 1)}", "--registry", path))
        port = free_port()
        command = [sys.executable, "-m", "dspy_registry.cli", "ui", "--registry", str(path), "--port", str(port)]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/programs/{PROGRAM}.html"
        try:
            deadline = time.time() + 60
            while True:
                try:
                    first, body = fetch(url)
                    break
                except OSError:
                    if time.time() > deadline or server.poll() is not None:
                        raise
                    time.sleep(0.1)
            rows = body.count(b"<tr") - 1  # the header row
            points = body.count(b'data-series="dev score"')
            warm = [fetch(url)[0] for _ in range(args.repeats)]
        finally:
            server.terminate()
            server.wait(timeout=15)
    median = statistics.median(warm)
    print(
        f"program page, {args.versions} versions: first request {first:.3f} s, median of {args.repeats} {median:.3f} s"
    )
    print(f"page size {len(body) / 1024:.0f} KiB, {points} dev-score points (rows counted: {rows})")
    print(f"target {TARGET_SECONDS} s: {'met' if median < TARGET_SECONDS else 'MISSED'}")
    return 0 if median < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
