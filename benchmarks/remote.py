"""Publish, promote and show against a real `git daemon` on 127.0.0.1, beside the same commands on a local registry.

    python benchmarks/remote.py [--repeats 7]

Each figure is the median wall time of the real `dspyreg` CLI (a fresh process: cold start included). The remote
client has a warm cache (as on a machine that has used the registry before); promote alternates between two versions
so every call really moves prod; show runs after another machine moved prod, so it also fetches the moved tag.
Writes results to benchmarks/results/remote.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DSPYREG = [sys.executable, "-m", "dspy_registry.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([*DSPYREG, *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def measure(registry: str, states: Path, env: dict[str, str], other: dict[str, str], repeats: int) -> dict[str, float]:
    spec = f"{ROOT / 'examples' / 'qa_program.py'}:DocsQA"
    subprocess.run([*DSPYREG, "init", registry], env=env, check=True, capture_output=True)
    publish = [
        timed(
            [
                "publish",
                spec,
                "--state",
                str(states / f"qa-v1.{i % 2}.json"),
                "--name",
                "qa",
                "--version",
                f"v1.{i}",
                "--registry",
                registry,
            ],
            env,
        )
        for i in range(repeats)
    ]
    promote = [timed(["promote", f"v1.{i % 2}", "--to", "prod", "--registry", registry], env) for i in range(repeats)]
    show = []
    for i in range(repeats):
        # Another machine moves prod; this one must see it at once.
        subprocess.run(
            [*DSPYREG, "promote", f"v1.{(i + 1) % 2 + 2}", "--to", "prod", "--registry", registry],
            env=other,
            check=True,
            capture_output=True,
        )
        show.append(timed(["show", "prod", "--registry", registry], env))
    return {
        name: statistics.median(values) for name, values in (("publish", publish), ("promote", promote), ("show", show))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dspyreg-bench-remote-") as tmp_dir:
        tmp = Path(tmp_dir)
        base_env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "true"}
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "optimize.py"), str(tmp / "states")],
            check=True,
            capture_output=True,
        )
        (tmp / "server").mkdir()
        subprocess.run(["git", "init", "-q", "--bare", str(tmp / "server" / "registry.git")], check=True)
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
            local_env = {**base_env, "DSPYREG_CACHE": str(tmp / "cache-local")}
            remote_env = {**base_env, "DSPYREG_CACHE": str(tmp / "cache-a")}
            other_env = {**base_env, "DSPYREG_CACHE": str(tmp / "cache-b")}
            results = {
                "local": measure(str(tmp / "local-registry"), tmp / "states", local_env, local_env, args.repeats),
                "git daemon": measure(url, tmp / "states", remote_env, other_env, args.repeats),
            }
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)
    git_version = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"{os.cpu_count()} cores, Python {platform.python_version()}, {git_version}, median of {args.repeats}")
    print(f"{'registry':<12}{'publish':>10}{'promote':>10}{'show':>10}")
    for where, figures in results.items():
        print(f"{where:<12}" + "".join(f"{figures[k]:>9.3f}s" for k in ("publish", "promote", "show")))
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "remote.json").write_text(json.dumps({"repeats": args.repeats, "seconds": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
