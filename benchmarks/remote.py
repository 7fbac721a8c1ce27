"""Publish, promote and show against a real `git daemon` on 127.0.0.1, beside the same commands on a local registry.

    python benchmarks/remote.py [--repeats 7] [--quick]

Each figure is the median wall time of the real `dspyreg` CLI (a fresh process: cold start included). The remote
client has a warm cache (as on a machine that has used the registry before); promote alternates between two versions
so every call really moves prod; show runs after another machine moved prod, so it also fetches the moved tag.
Prints markdown tables and writes benchmarks/results/remote.json (remote-quick.json with --quick: 4 runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from harness import (
    RESULTS,
    dspyreg,
    example_states,
    facts_table,
    free_port,
    loadavg,
    machine,
    markdown_table,
    publish_example,
    run,
    timed,
    write_generated_block,
)

COMMANDS = ("publish", "promote", "show")


def measure(registry: str, states: Path, env: dict[str, str], other: dict[str, str], repeats: int) -> dict[str, float]:
    run(dspyreg("init", registry), env=env)
    publish = [
        timed(publish_example(registry, states / f"qa-v1.{i % 2}.json", f"v1.{i}"), env=env) for i in range(repeats)
    ]
    promote = [
        timed(dspyreg("promote", f"v1.{i % 2}", "--to", "prod", "--registry", registry), env=env)
        for i in range(repeats)
    ]
    show = []
    for i in range(repeats):
        # Another machine moves prod; this one must see it at once.
        run(dspyreg("promote", f"v1.{(i + 1) % 2 + 2}", "--to", "prod", "--registry", registry), env=other)
        show.append(timed(dspyreg("show", "prod", "--registry", registry), env=env))
    return {name: statistics.median(values) for name, values in zip(COMMANDS, (publish, promote, show))}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 runs per command, docs untouched")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    args = parser.parse_args()
    repeats = 4 if args.quick else args.repeats
    if repeats < 4:
        parser.error("--repeats must be at least 4 (before each show, another machine moves prod to v1.2 or v1.3)")
    info = machine()
    with tempfile.TemporaryDirectory(prefix="dspyreg-bench-remote-") as tmp_dir:
        tmp = Path(tmp_dir)
        states = example_states(tmp / "states")
        (tmp / "server").mkdir()
        run(["git", "init", "-q", "--bare", tmp / "server" / "registry.git"])
        port = free_port()
        daemon = subprocess.Popen(
            [
                "git",
                "daemon",
                "--reuseaddr",
                f"--base-path={tmp / 'server'}",
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
                f"--port={port}",
                str(tmp / "server"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"git://127.0.0.1:{port}/registry.git"
            while subprocess.run(["git", "ls-remote", url], capture_output=True).returncode != 0:
                time.sleep(0.1)
            local_env = {"DSPYREG_CACHE": str(tmp / "cache-local")}
            remote_env = {"DSPYREG_CACHE": str(tmp / "cache-a")}
            other_env = {"DSPYREG_CACHE": str(tmp / "cache-b")}
            results = {
                "local": measure(str(tmp / "local-registry"), states, local_env, local_env, repeats),
                "git daemon": measure(url, states, remote_env, other_env, repeats),
            }
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)
    facts = {
        "measured": info.measured,
        "machine": f"{info.nproc} cores ({info.cpu}), {info.os}",
        "software": f"Python {info.python}, git {info.git}",
        "dspyreg": info.dspyreg_source,
        "load average before / after": f"{info.loadavg} / {loadavg()}",
        "runs per figure (median)": str(repeats),
        "reproduce": "`python benchmarks/remote.py`",
    }
    labels = {"local": "local folder", "git daemon": "`git daemon` on 127.0.0.1"}
    rows = [[labels[where], *(f"{figures[k]:.3f}" for k in COMMANDS)] for where, figures in results.items()]
    report = facts_table(facts) + "\n\n" + markdown_table(["registry", *COMMANDS], rows, numeric=(1, 2, 3))
    print(report)
    if not (args.quick or args.no_docs):
        write_generated_block("remote", "remote.py", "## Remote registry", report)
    out = RESULTS / ("remote-quick.json" if args.quick else "remote.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"repeats": repeats, "seconds": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
