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

from harness import dspyreg, facts_table, free_port, machine, run, targets_table, write_generated_block
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
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    args = parser.parse_args(argv)
    info = machine()
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
    facts = {
        "measured": info.measured,
        "machine": f"{info.nproc} cores ({info.cpu}), {info.os}; load average {info.loadavg}",
        "dspyreg": info.dspyreg_source,
        "registry": f"{args.versions:,} versions",
        "program page": f"{len(body) / 1024:.0f} KiB, {points} dev-score points, {rows} table rows",
        "first request": f"{first:.3f} s",
        "reproduce": "`python benchmarks/ui.py`",
    }
    met = median < TARGET_SECONDS
    target = f"`dspyreg ui` program page median < {TARGET_SECONDS:g} s"
    report = facts_table(facts) + "\n\n" + targets_table([(target, f"{median:.3f} s (median of {args.repeats})", met)])
    print(report)
    if not args.no_docs:
        write_generated_block("ui", "ui.py", "## The ui", report)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
