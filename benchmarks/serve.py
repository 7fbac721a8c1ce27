"""`dspyreg serve` under load, beside a naive FastAPI server and the in-process baseline, against a fake LM.

Usage::

    python benchmarks/serve.py [--seconds 20] [--quick] [--latency-ms 100] [--clients 1,32]
                               [--saturation-clients 128] [--no-docs] [--keep]

One run builds a throwaway registry (`dspyreg init`, examples/optimize.py, `dspyreg publish` of v1.1 and v1.0,
`dspyreg promote v1.1 --to prod`, `dspyreg export prod`), starts the fake OpenAI-compatible LM
(dspy_registry.fake_lm, 100 ms per call) in its own process, and measures, each point for --seconds:

1. the in-process baseline: `PipelineServer.run` called in a loop in a fresh process (1 client);
2. `dspyreg serve --workers 1` at 1 and 32 concurrent clients, and at 128 (where the server, not the LM, is the
   limit: the ceiling of closed-loop clients is clients / in-process latency);
3. a naive server: FastAPI + uvicorn with an `async def /predict` that calls the program directly inside
   `with dspy.context(lm=lm)` (it blocks the event loop, the way it is usually written), at 1 and 32 clients;
4. `dspyreg serve --workers 2` at 1, 32 and 128 clients, then "every worker follows the tag": `dspyreg promote v1.0`,
   wait 2 s, poll /version 20 times over ~1 s on fresh connections (each answer is traced to the worker process
   that held the connection) and count the workers that logged the swap.

Clients are threads of this process, each with its own keep-alive `http.client.HTTPConnection`, sending
{"question": ...} to POST /predict back to back. A point's window starts once every client has had an answer and
at least the warm-up time has passed; throughput counts the answers that arrived inside the window, latency
percentiles are over those answers, and an error is any answer other than 200 or a failed connection (warm-up
included). CPU use of the server processes, the fake LM, this process (the load generator) and the whole machine
is read from /proc over each window.

The fake LM (dspy_registry.fake_lm) sets TCP_NODELAY on its sockets: it writes the status line and headers and then
the body in two sends, and without it Nagle's algorithm would hold the body until the client's delayed ACK (~40 ms).
Its per-request log (`FakeLM.requests`, which grows without bound) is turned off too, so its memory and GC pauses
stay flat during the run.

Results: markdown tables on stdout (progress goes to stderr), benchmarks/results/serve.json, and the generated block
of the `## Serving` section of docs/performance.md (text outside the block is written by hand and kept). --quick is a
smoke run of 3 s per point: it writes benchmarks/results/serve-quick.json and leaves the docs alone.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness import (
    RESULTS,
    dspyreg,
    example_states,
    facts_table,
    figure,
    free_port,
    fresh_registry,
    loadavg,
    log,
    machine,
    markdown_table,
    run,
    targets_table,
    write_generated_block,
)

RESULTS_JSON = RESULTS / "serve.json"
SECTION = "## Serving"
QUESTIONS = [
    "What is DSPy?",
    "How do I roll back a deployed program?",
    "Why prefer JSON over pickle for saved state?",
    "How does BootstrapFewShot choose demos?",
]
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_RATIO_NAIVE = 10.0
TARGET_P50_OVERHEAD_MS = 10.0
TARGET_RATIO_WORKERS = 1.3
FOLLOW_POLLS = 20


# -- helpers ------------------------------------------------------------------------------------------------------
def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    k = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[k]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


class Proc:
    """A subprocess in its own session, killed with its whole process group at the end."""

    def __init__(self, name: str, argv: Sequence[str | Path], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.out_path = logdir / f"{name}.out"
        self.err_path = logdir / f"{name}.err"
        self._out = self.out_path.open("wb")
        self._err = self.err_path.open("wb")
        self.popen = subprocess.Popen(
            [str(a) for a in argv], env=env, stdout=self._out, stderr=self._err, start_new_session=True
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stderr_text(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.popen.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        with contextlib.suppress(ProcessLookupError, PermissionError):  # stragglers of the group (uvicorn workers)
            os.killpg(self.pid, signal.SIGKILL)
        self._out.close()
        self._err.close()


# -- /proc readings -------------------------------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields:
                parents[int(entry)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == current]
        found.extend(kids)
        frontier.extend(kids)
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime (+ reaped children) of one process."""
    fields = _stat_fields(pid)
    if not fields:
        return 0.0
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return float(total - idle), float(total)


class CpuMeter:
    def __init__(self, server_pid: int | None, lm_pid: int) -> None:
        self.server_pid, self.lm_pid = server_pid, lm_pid
        self.ncpu = os.cpu_count() or 1

    def snap(self) -> dict[str, Any]:
        busy, total = machine_cpu()
        own = os.times()
        tree = (self.server_pid, *descendants(self.server_pid)) if self.server_pid else ()
        per_pid = {p: cpu_seconds(p) for p in tree}
        return {
            "wall": time.perf_counter(),
            "server": sum(per_pid.values()),
            "server_by_pid": per_pid,
            "lm": cpu_seconds(self.lm_pid),
            "client": own.user + own.system,
            "busy": busy,
            "total": total,
        }

    def delta(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        wall = b["wall"] - a["wall"]
        by_pid = {
            str(pid): round((cpu - a["server_by_pid"].get(pid, 0.0)) / wall, 2)
            for pid, cpu in b["server_by_pid"].items()
        }
        server, lm, client = (b[k] - a[k] for k in ("server", "lm", "client"))
        busy_fraction = (b["busy"] - a["busy"]) / max(1.0, b["total"] - a["total"])
        return {
            "server_cores": round(server / wall, 2),
            "fake_lm_cores": round(lm / wall, 2),
            "load_generator_cores": round(client / wall, 2),
            "other_cores": round(max(0.0, busy_fraction * self.ncpu - (server + lm + client) / wall), 2),
            "machine_busy_pct": round(100 * busy_fraction, 1),
            "server_cpu_seconds": round(server, 2),
            "server_cores_by_pid": {pid: cores for pid, cores in by_pid.items() if cores >= 0.01},
        }


# -- the load generator ---------------------------------------------------------------------------------------------
def load(
    port: int, clients: int, seconds: float, warmup: float, meter: CpuMeter, max_warmup: float = 45.0
) -> dict[str, Any]:
    """`clients` threads posting to /predict back to back; the measured window follows the warm-up."""
    stop_at = [math.inf]
    records: list[list[tuple[float, float, int]]] = [[] for _ in range(clients)]
    failures: Counter[str] = Counter()
    lock = threading.Lock()

    def client(i: int) -> None:
        conn: http.client.HTTPConnection | None = None
        n = 0
        mine = records[i]
        while time.perf_counter() < stop_at[0]:
            body = json.dumps({"question": QUESTIONS[(i + n) % len(QUESTIONS)]})
            n += 1
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            started = time.perf_counter()
            try:
                conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                if resp.will_close:
                    conn.close()
                    conn = None
            except Exception as err:  # a dropped or refused connection is an error too
                status = -1
                with lock:
                    failures[type(err).__name__] += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
            mine.append((started, time.perf_counter(), status))
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    while True:  # warm-up: every client answered once, and at least `warmup` seconds
        time.sleep(0.05)
        now = time.perf_counter()
        if (now - t0 >= warmup and all(records)) or now - t0 >= max_warmup:
            break
    window_start = time.perf_counter()
    cpu_before = meter.snap()
    conns = connections_by_pid(port, [meter.server_pid, *descendants(meter.server_pid)]) if meter.server_pid else {}
    window_end = window_start + seconds
    stop_at[0] = window_end
    time.sleep(max(0.0, window_end - time.perf_counter()))
    cpu_after = meter.snap()
    for t in threads:
        t.join(timeout=150)
    hung = sum(t.is_alive() for t in threads)

    every = [r for rs in records for r in rs]
    inside = [r for r in every if window_start <= r[1] <= window_end]
    lat = sorted(end - start for start, end, status in inside if status == 200)
    statuses = Counter(str(status) for _, _, status in every if status != 200)
    return {
        "clients": clients,
        "window_seconds": round(seconds, 2),
        "warmup_seconds": round(window_start - t0, 2),
        "requests": len(inside),
        "throughput_rps": round(sum(1 for r in inside if r[2] == 200) / seconds, 2),
        "p50_ms": ms(percentile(lat, 50)),
        "p95_ms": ms(percentile(lat, 95)),
        "mean_ms": ms(statistics.fmean(lat)) if lat else None,
        "max_ms": ms(lat[-1]) if lat else None,
        "errors_in_window": sum(1 for r in inside if r[2] != 200),
        "errors_total": sum(statuses.values()),
        "error_statuses": dict(statuses),
        "connection_failures": dict(failures),
        "requests_total": len(every),
        "hung_clients": hung,
        "cpu": meter.delta(cpu_before, cpu_after),
        "connections_by_pid": conns,
    }


# -- HTTP checks ----------------------------------------------------------------------------------------------------
def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        data = resp.read()
        try:
            return resp.status, json.loads(data)
        except ValueError:
            return resp.status, data.decode(errors="replace")
    finally:
        conn.close()


def post_predict(port: int, timeout: float = 30.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/predict", json.dumps({"question": QUESTIONS[0]}), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def answered(port: int) -> bool:
    """True once POST /predict answers 200; a refused connection is "not yet", any other answer an error."""
    status = post_predict(port)
    if status != 200:
        raise RuntimeError(f"POST /predict answered {status}")
    return True


def ready_workers(proc: Proc, port: int, workers: int) -> bool:
    """Every worker logged its first swap (its version is loaded) and /ready answers 200."""
    return swaps_logged(proc) >= workers and get(port, "/ready")[0] == 200


def swaps_logged(proc: Proc, version: str | None = None) -> int:
    count = 0
    for line in proc.stderr_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(event, dict)
            and event.get("event") == "swapped"
            and (version is None or event.get("version") == version)
        ):
            count += 1
    return count


def wait_until(check: Any, proc: Proc, what: str, timeout: float = 90.0) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.stderr_text()[-3000:]}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name}: no {what} after {timeout:.0f} s:\n{proc.stderr_text()[-3000:]}")


def connection_owner(server_port: int, client_port: int, pids: Sequence[int]) -> int | None:
    """The pid holding the server side of the 127.0.0.1 connection from `client_port` (via /proc/net/tcp)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        local_port = int(f[1].split(":")[1], 16)
        remote_port = int(f[2].split(":")[1], 16)
        if local_port == server_port and remote_port == client_port:
            inode = f[9]
            break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


def connections_by_pid(server_port: int, pids: Sequence[int]) -> dict[str, int]:
    """How many established connections to `server_port` each of `pids` holds (which worker got which client)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[3] == "01" and int(f[1].split(":")[1], 16) == server_port:
            inodes.add(f"socket:[{f[9]}]")
    counts: dict[str, int] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        n = 0
        for fd in fds:
            try:
                n += os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
            except OSError:
                continue
        if n:
            counts[str(pid)] = n
    return counts


def follow_check(port: int, proc: Proc, registry: Path, env: dict[str, str], workers: int) -> dict[str, Any]:
    """Promote v1.0; after 2 s, 20 polls of /version over ~1 s on fresh connections, each traced to its worker."""
    worker_pids = descendants(proc.pid)
    before = get(port, "/version")[1].get("version")
    started = time.perf_counter()
    run(dspyreg("promote", "v1.0", "--to", "prod", "--registry", registry), env=env)
    promote_seconds = time.perf_counter() - started
    time.sleep(2.0)
    answers = []
    for _ in range(FOLLOW_POLLS):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/version")
            resp = conn.getresponse()
            body = json.loads(resp.read())
            owner = connection_owner(port, conn.sock.getsockname()[1], worker_pids) if conn.sock else None
            answers.append({"status": resp.status, "version": body.get("version"), "worker_pid": owner})
        except Exception as err:
            answers.append({"status": -1, "version": None, "worker_pid": None, "error": type(err).__name__})
        finally:
            conn.close()
        time.sleep(1.0 / FOLLOW_POLLS)
    versions = Counter(str(a["version"]) for a in answers)
    by_worker = Counter(str(a["worker_pid"]) for a in answers)
    swapped = swaps_logged(proc, "v1.0")
    return {
        "workers": workers,
        "version_before": before,
        "promote_seconds": round(promote_seconds, 2),
        "polls": len(answers),
        "versions_seen": dict(versions),
        "answers_by_worker_pid": dict(by_worker),
        "worker_pids": worker_pids,
        "workers_that_logged_the_swap": swapped,
        "all_new_version": all(a["status"] == 200 and a["version"] == "v1.0" for a in answers),
        "ok": all(a["status"] == 200 and a["version"] == "v1.0" for a in answers) and swapped >= workers,
    }


NAIVE_APP = '''"""Naive server: FastAPI, an `async def` endpoint calling the program directly: it blocks the loop."""
import argparse

import dspy
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from dspy_registry.runtime.inference import PipelineServer

parser = argparse.ArgumentParser()
parser.add_argument("--bundle", required=True)
parser.add_argument("--port", type=int, required=True)
args = parser.parse_args()

server = PipelineServer(args.bundle)
lm = server.lm
app = FastAPI()


class Question(BaseModel):
    question: str


@app.post("/predict")
async def predict(body: Question) -> dict:
    inputs = body.model_dump()
    with dspy.context(lm=lm):
        prediction = server.program(**inputs)
    return {name: prediction.get(name) for name in server.outputs}


uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_level="warning")
'''


# -- child modes: the fake LM and the in-process baseline ---------------------------------------------
def child_fake_lm(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--latency-ms", type=float, required=True)
    args = p.parse_args(argv)

    from dspy_registry import fake_lm

    fake_lm.FakeLM.record = lambda self, body: None  # type: ignore[method-assign]  # no unbounded request log
    sys.argv = ["fake_lm", "--port", str(args.port), "--latency-ms", str(args.latency_ms)]
    fake_lm.main()


def child_inprocess(argv: list[str]) -> None:
    """PipelineServer.run in a loop, one caller: the floor any server adds its overhead to."""
    p = argparse.ArgumentParser()
    p.add_argument("--bundle", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--warmup", type=float, required=True)
    args = p.parse_args(argv)

    from dspy_registry.runtime.inference import PipelineServer

    server = PipelineServer(args.bundle)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.warmup or n < 2:
        server.run({"question": QUESTIONS[n % len(QUESTIONS)]})
        n += 1
    lat: list[float] = []
    cpu0 = time.process_time()
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        t = time.perf_counter()
        server.run({"question": QUESTIONS[n % len(QUESTIONS)]})
        lat.append(time.perf_counter() - t)
        n += 1
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    lat.sort()
    print(
        json.dumps(
            {
                "clients": 1,
                "window_seconds": round(wall, 2),
                "requests": len(lat),
                "throughput_rps": round(len(lat) / wall, 2),
                "p50_ms": ms(percentile(lat, 50)),
                "p95_ms": ms(percentile(lat, 95)),
                "mean_ms": ms(statistics.fmean(lat)),
                "max_ms": ms(lat[-1]),
                "errors_in_window": 0,
                "errors_total": 0,
                "cpu_ms_per_request": round(1000 * cpu / len(lat), 1),
            }
        )
    )


# -- the run --------------------------------------------------------------------------------------------------------
def cpu_probe() -> float:
    """Median ms of a fixed pure-Python loop (5 tries): a yardstick of this machine's speed at the moment."""
    times = []
    for _ in range(5):
        start = time.perf_counter()
        x = 0
        for i in range(1_000_000):
            x += i * i
        times.append(1000 * (time.perf_counter() - start))
    return round(statistics.median(times), 1)


def serving_machine() -> dict[str, Any]:
    """The shared machine facts, the versions of the serving stack, and the CPU yardstick before the run."""
    import importlib.metadata as md

    versions: dict[str, str | None] = {}
    for pkg in ("dspy", "litellm", "fastapi", "uvicorn", "starlette", "httptools", "uvloop"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {**asdict(machine()), "packages": versions, "cpu_probe_ms_before": cpu_probe()}


def setup(work: Path, env: dict[str, str]) -> tuple[Path, Path]:
    registry, bundle = work / "registry", work / "bundle"
    states = example_states(work / "states")
    fresh_registry(registry, [(v, states / f"qa-{v}.json") for v in ("v1.1", "v1.0")], env=env)
    run(dspyreg("promote", "v1.1", "--to", "prod", "--registry", registry), env=env)
    run(dspyreg("export", "prod", bundle, "--registry", registry), env=env)
    return registry, bundle


def bench(args: argparse.Namespace) -> dict[str, Any]:
    wall0 = time.perf_counter()
    info = serving_machine()
    self_path = str(Path(__file__).resolve())
    work = Path(tempfile.mkdtemp(prefix="dspyreg-serve-bench-"))
    procs: list[Proc] = []
    lm_port = free_port()
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "true",
        "DSPYREG_LM_MODEL": "openai/fake-model",
        "DSPYREG_LM_API_BASE": f"http://127.0.0.1:{lm_port}/v1",
        "DSPYREG_LM_API_KEY": "x",
        "DSPYREG_LM_NUM_RETRIES": "0",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "true"
    points: list[dict[str, Any]] = []
    follow: dict[str, Any] = {}
    seconds, warmup = args.seconds, args.warmup

    def start(proc: Proc) -> Proc:
        procs.append(proc)
        return proc

    def stop(proc: Proc) -> None:
        proc.stop()
        procs.remove(proc)

    try:
        log(f"setup in {work}")
        registry, bundle = setup(work, env)

        lm_argv = [sys.executable, self_path, "_fake_lm", "--port", str(lm_port), "--latency-ms", str(args.latency_ms)]
        lm = start(Proc("fake_lm", lm_argv, env, work))
        wait_until(lambda: "fake LM on" in lm.out_path.read_text(), lm, "fake LM banner", 30)
        log(f"fake LM on port {lm_port} ({args.latency_ms:g} ms per call, pid {lm.pid})")

        log(f"in-process baseline: PipelineServer.run in a loop for {seconds:g} s")
        inprocess = [sys.executable, self_path, "_inprocess", "--bundle", bundle]
        out = run([*inprocess, "--seconds", str(seconds), "--warmup", str(warmup)], env=env)
        base = json.loads(out.strip().splitlines()[-1])
        points.append({"server": "in-process PipelineServer.run", "key": "inprocess", "workers": None, **base})
        log(f"  p50 {base['p50_ms']} ms, p95 {base['p95_ms']} ms, {base['cpu_ms_per_request']} ms CPU per request")

        def measure(key: str, label: str, workers: int | None, port: int, pid: int, clients: Sequence[int]) -> None:
            for c in clients:
                log(f"{label}: {c} client(s) for {seconds:g} s")
                result = load(port, c, seconds, warmup, CpuMeter(pid, lm.pid))
                points.append({"server": label, "key": key, "workers": workers, **result})
                log(
                    f"  {result['throughput_rps']} req/s, p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, "
                    f"errors {result['errors_total']}, server {result['cpu']['server_cores']} cores, "
                    f"machine {result['cpu']['machine_busy_pct']}% busy"
                )

        for workers in (1, 2):
            port = free_port()
            srv = start(
                Proc(
                    f"dspyreg_serve_w{workers}",
                    dspyreg(
                        "serve",
                        "--registry",
                        registry,
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--workers",
                        str(workers),
                        "--poll-seconds",
                        "1",
                    ),
                    env,
                    work,
                )
            )
            wait_until(functools.partial(ready_workers, srv, port, workers), srv, "ready workers")
            measure(
                f"serve_w{workers}",
                f"dspyreg serve --workers {workers}",
                workers,
                port,
                srv.pid,
                [*args.clients, *args.saturation_clients],
            )
            if workers == 2:
                log("follow check: promote v1.0, wait 2 s, poll /version 20 times")
                follow = follow_check(port, srv, registry, env, workers)
                log(f"  {follow}")
            stop(srv)

            if workers == 1:
                port = free_port()
                naive_app = work / "naive_app.py"
                naive_app.write_text(NAIVE_APP)
                naive = start(
                    Proc("naive", [sys.executable, naive_app, "--bundle", bundle, "--port", str(port)], env, work)
                )
                wait_until(functools.partial(answered, port), naive, "a first answer")
                measure("naive", "naive FastAPI (async def, blocking)", 1, port, naive.pid, args.clients)
                stop(naive)
    finally:
        for proc in reversed(procs):
            proc.stop()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    info["loadavg_after"] = loadavg()
    info["cpu_probe_ms_after"] = cpu_probe()
    return {
        "measured": info["measured"],
        "machine": info,
        "settings": {
            "seconds_per_point": seconds,
            "warmup_seconds_min": warmup,
            "lm_latency_ms": args.latency_ms,
            "fake_lm_tcp_nodelay": True,
            "clients": list(args.clients),
            "saturation_clients": list(args.saturation_clients),
            "quick": args.quick,
            "poll_seconds": 1,
        },
        "points": points,
        "follow": follow,
        "total_seconds": round(time.perf_counter() - wall0, 1),
        "command": "python benchmarks/serve.py"
        + (" --quick" if args.quick else "" if seconds == 20 else f" --seconds {seconds:g}"),
    }


# -- verdicts, table, docs ------------------------------------------------------------------------------------------
def point(results: dict[str, Any], key: str, clients: int) -> dict[str, Any] | None:
    return next((p for p in results["points"] if p["key"] == key and p["clients"] == clients), None)


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    top = max(results["settings"]["clients"])
    out = []
    s1, naive, base = point(results, "serve_w1", top), point(results, "naive", top), point(results, "inprocess", 1)
    s1_one, s2 = point(results, "serve_w1", 1), point(results, "serve_w2", top)
    if s1 and naive:
        ratio = s1["throughput_rps"] / max(naive["throughput_rps"], 1e-9)
        out.append(
            {
                "target": f"`dspyreg serve` throughput at {top} clients >= {TARGET_RATIO_NAIVE:g}x the naive server",
                "measured": f"{s1['throughput_rps']:.1f} vs {naive['throughput_rps']:.1f} req/s = {ratio:.1f}x",
                "met": ratio >= TARGET_RATIO_NAIVE,
            }
        )
    if s1_one and base and s1_one["p50_ms"] is not None:
        over = s1_one["p50_ms"] - base["p50_ms"]
        out.append(
            {
                "target": f"`dspyreg serve` p50 at 1 client <= in-process p50 + {TARGET_P50_OVERHEAD_MS:g} ms",
                "measured": f"{s1_one['p50_ms']:.1f} vs {base['p50_ms']:.1f} ms = {over:+.1f} ms",
                "met": over <= TARGET_P50_OVERHEAD_MS,
            }
        )
    if s1 and s2:
        ratio = s2["throughput_rps"] / max(s1["throughput_rps"], 1e-9)
        out.append(
            {
                "target": f"`--workers 2` >= {TARGET_RATIO_WORKERS:g}x `--workers 1` at {top} clients",
                "measured": f"{s2['throughput_rps']:.1f} vs {s1['throughput_rps']:.1f} req/s = {ratio:.2f}x",
                "met": ratio >= TARGET_RATIO_WORKERS,
            }
        )
    errors = sum(p.get("errors_total", 0) for p in results["points"])
    total = sum(p.get("requests_total", p["requests"]) for p in results["points"])
    out.append(
        {
            "target": "no errors (any non-200 or failed connection, warm-up included)",
            "measured": f"{errors} error(s) in {total} requests",
            "met": errors == 0,
        }
    )
    follow = results.get("follow") or {}
    if follow:
        out.append(
            {
                "target": "every worker follows the tag (`--workers 2 --poll-seconds 1`)",
                "measured": (
                    f"{follow['versions_seen'].get('v1.0', 0)}/{follow['polls']} polls answered v1.0, from "
                    f"{len([p for p in follow['answers_by_worker_pid'] if p != 'None'])} worker pid(s); "
                    f"{follow['workers_that_logged_the_swap']}/{follow['workers']} workers logged the swap"
                ),
                "met": bool(follow["ok"]),
            }
        )
    return out


def ceiling(results: dict[str, Any], clients: int) -> float | None:
    """The most a server could give `clients` closed-loop clients: each waits at least the in-process latency."""
    base = point(results, "inprocess", 1)
    return clients * 1000 / base["p50_ms"] if base and base.get("p50_ms") else None


def server_ms_per_request(p: dict[str, Any]) -> float | None:
    """Server CPU per answered request: measured in-process, or the server tree's CPU over the window's answers."""
    if "cpu_ms_per_request" in p:
        return float(p["cpu_ms_per_request"])
    answers = p["throughput_rps"] * p["window_seconds"]
    return 1000 * p["cpu"]["server_cpu_seconds"] / answers if answers else None


HEADERS = [
    "server",
    "clients",
    "req/s",
    "ceiling req/s",
    "p50 ms",
    "p95 ms",
    "requests",
    "errors",
    "server CPU (cores)",
    "server CPU ms/req",
    "fake LM CPU",
    "load gen CPU",
    "other CPU",
    "machine busy",
]


def rows(results: dict[str, Any]) -> list[list[str]]:
    table = []
    for p in results["points"]:
        cpu = p.get("cpu") or {}
        cap = ceiling(results, p["clients"])
        table.append(
            [
                p["server"],
                str(p["clients"]),
                figure(p["throughput_rps"], "{:.1f}"),
                figure(cap, "{:.1f}" if cap is not None and cap < 10 else "{:.0f}"),
                figure(p["p50_ms"], "{:.1f}"),
                figure(p["p95_ms"], "{:.1f}"),
                str(p["requests"]),
                str(p.get("errors_total", 0)),
                figure(cpu.get("server_cores"), "{:.2f}"),
                figure(server_ms_per_request(p), "{:.1f}"),
                figure(cpu.get("fake_lm_cores"), "{:.2f}"),
                figure(cpu.get("load_generator_cores"), "{:.2f}"),
                figure(cpu.get("other_cores"), "{:.2f}"),
                figure(cpu.get("machine_busy_pct"), "{:.0f}%"),
            ]
        )
    return table


def worker_rows(results: dict[str, Any]) -> list[list[str]]:
    """Per worker process of `--workers 2`: the keep-alive connections it held and the cores it used."""
    out = []
    for p in results["points"]:
        if p["key"] != "serve_w2":
            continue
        cores = p["cpu"]["server_cores_by_pid"]
        for pid, connections in sorted(p["connections_by_pid"].items(), key=lambda kv: -kv[1]):
            out.append([str(p["clients"]), pid, str(connections), figure(cores.get(pid), "{:.2f}")])
    return out


def report(results: dict[str, Any]) -> str:
    """The markdown tables of one run: where and how, every point, the targets, the follow check, the workers."""
    m, s = results["machine"], results["settings"]
    pk = m["packages"]
    facts = {
        "measured": results["measured"],
        "machine": f"{m['nproc']} cores ({m['cpu']}), {m['os']}",
        "software": (
            f"Python {m['python']}, dspy {pk.get('dspy')}, litellm {pk.get('litellm')}, FastAPI {pk.get('fastapi')}, "
            f"uvicorn {pk.get('uvicorn')}, httptools {pk.get('httptools')}, uvloop {pk.get('uvloop')}"
        ),
        "dspyreg": m["dspyreg_source"],
        "load average before / after": f"{m['loadavg']} / {m['loadavg_after']}",
        "CPU yardstick ms before / after": f"{m['cpu_probe_ms_before']} / {m['cpu_probe_ms_after']}",
        "fake LM latency per call": f"{s['lm_latency_ms']:g} ms",
        "seconds per point (warm-up at least)": f"{s['seconds_per_point']:g} ({s['warmup_seconds_min']:g})",
        "dspyreg serve --poll-seconds": f"{s['poll_seconds']:g}",
        "whole run": f"{results['total_seconds'] / 60:.1f} min",
        "reproduce": f"`{results['command']}`",
    }
    parts = [
        facts_table(facts),
        markdown_table(HEADERS, rows(results), numeric=range(1, len(HEADERS))),
        targets_table([(v["target"], v["measured"], v["met"]) for v in verdicts(results)]),
    ]
    follow = results.get("follow") or {}
    if follow:
        seen = ", ".join(f"{v} x{n}" for v, n in follow["versions_seen"].items())
        by_pid = ", ".join(f"{p}: {n}" for p, n in follow["answers_by_worker_pid"].items())
        follow_facts = {
            "follow check": f"`--workers {follow['workers']} --poll-seconds 1` on {follow['version_before']}",
            "`dspyreg promote v1.0 --to prod`": f"{follow['promote_seconds']:.2f} s",
            "GETs of /version, 2 s later": str(follow["polls"]),
            "versions seen": seen,
            "answers per worker pid": by_pid,
            "workers that logged the swap": f"{follow['workers_that_logged_the_swap']} of {follow['workers']}",
        }
        parts.append(facts_table(follow_facts))
    workers = worker_rows(results)
    if workers:
        parts.append(markdown_table(["clients", "--workers 2 pid", "connections", "cores"], workers, numeric=(0, 2, 3)))
    return "\n\n".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per point [20]")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 s per point, 1 s warm-up, docs untouched")
    p.add_argument("--warmup", type=float, default=None, help="minimum warm-up seconds per point [2; 1 with --quick]")
    p.add_argument("--latency-ms", type=float, default=100.0, help="fake LM latency per call [100]")
    p.add_argument("--clients", default="1,32", help="concurrent clients per point [1,32]")
    p.add_argument(
        "--saturation-clients",
        default="128",
        help="extra points for dspyreg serve only, where the server rather than the LM is the limit [128; 0 to skip]",
    )
    p.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    p.add_argument("--keep", action="store_true", help="keep the work folder (registry, bundle, server logs)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results [benchmarks/results/serve.json; serve-quick.json with --quick]",
    )
    args = p.parse_args(argv)
    if args.out is None:
        args.out = RESULTS_JSON.with_name("serve-quick.json") if args.quick else RESULTS_JSON
    if args.quick:
        args.seconds = 3.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2.0
    args.clients = sorted({int(c) for c in args.clients.split(",") if c.strip()})
    args.saturation_clients = sorted({int(c) for c in args.saturation_clients.split(",") if c.strip() and int(c)})
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    children = {"_fake_lm": child_fake_lm, "_inprocess": child_inprocess}
    if argv and argv[0] in children:
        children[argv[0]](argv[1:])
        return 0
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops every subprocess on a plain kill
    results = bench(args)
    results["verdicts"] = verdicts(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    log(f"results: {args.out}")
    if args.quick or args.no_docs:
        log("docs/performance.md not updated (--quick or --no-docs)")
    else:
        write_generated_block("serving", "serve.py", SECTION, report(results))
        log(f"updated the {SECTION} section of docs/performance.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
