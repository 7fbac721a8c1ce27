"""`dspyreg serve` under load beside the program called in-process, a naive server and a competent one, fake LM.

Usage::

    python benchmarks/serve.py [--seconds 20] [--quick] [--latency-ms 100] [--clients 32,128] [--no-docs] [--keep]

One run builds a throwaway registry (`dspyreg init`, examples/optimize.py, `dspyreg publish` of v1.1 and v1.0,
`dspyreg promote v1.1 --to prod`, `dspyreg export prod`), starts the fake OpenAI-compatible LM (dspy_registry.fake_lm,
--latency-ms per call; the example program makes 3 calls per request) and measures, each point for --seconds after a
warm-up in which every client has had an answer:

- in-process: `PipelineServer.run` in a loop on each of as many threads as clients, in a fresh process: the CPU the
  program itself costs;
- naive: FastAPI + uvicorn, an `async def /predict` calling the program directly (it blocks the event loop);
- competent: FastAPI + uvicorn, `async def /predict` awaiting `dspy.asyncify(program)` with 64 threads;
- `dspyreg serve --workers 1` and `--workers 2` (`--poll-seconds 1`);

each at every --clients count: threads of this process, each with its own keep-alive connection, posting
{"question": ...} back to back. Server CPU per request is the utime + stime of the server's process tree over the
window (/proc) divided by the answers in it. Then, with the LM still up: cold start (process start to the first 200
from POST /predict, median of --cold-runs) of the naive, competent and `dspyreg serve` processes; a promotion under
load (`dspyreg promote v1.0` while 32 clients post to `--workers 2`: seconds from the tag move to the first answer of
v1.0 and to the last answer of v1.1); `dspyreg serve --workers 1` and the naive app started once more each under
PYTHONPROFILEIMPORTTIME=1 (to the first answer); an in-process profile of the REST path (the app driven through httpx's
ASGI transport, the program made free) with its CPU per request.

A missed target comes with its why: the REST path's top cProfile entries (CPU per request, `--workers 1` against the
competent baseline); the CPU split of `--workers 1` and `--workers 2` at the most clients (server, fake LM, this load
generator, the rest of the machine; `--workers 2` ratio); the startup timeline and the modules only `dspyreg serve`
imports, by top-level package (cold start).

Results: markdown tables on stdout (progress on stderr), benchmarks/results/serve.json, and the generated block of
the `## Serving` section of docs/performance.md. --quick (3 s per point, one cold start each) writes
benchmarks/results/serve-quick.json and leaves the docs alone.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness import (
    RESULTS,
    ImportTime,
    Proc,
    cpu_seconds,
    dspyreg,
    example_states,
    facts_table,
    figure,
    free_port,
    fresh_registry,
    import_times,
    loadavg,
    log,
    machine,
    markdown_table,
    percentile,
    process_tree,
    run,
    targets_table,
    wait_until,
    write_generated_block,
)

SECTION = "## Serving"
QUESTIONS = [
    "What is DSPy?",
    "How do I roll back a deployed program?",
    "Why prefer JSON over pickle for saved state?",
    "How does BootstrapFewShot choose demos?",
]
POLL_SECONDS = 1.0
THREADS = 64
TARGET_OVERHEAD_MS = 1.0  # server CPU per request beyond the in-process call
TARGET_WORKERS_RATIO = 1.8
TARGET_COLD_START_S = 0.1  # beyond the naive app
TARGET_SWAP_S = 0.5  # beyond the poll interval
PROFILE_TOP = 12

NAIVE_APP = '''"""Naive server: FastAPI, an `async def` endpoint calling the program directly: it blocks the loop."""
import argparse
import dspy, uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from dspy_registry.runtime.inference import PipelineServer

parser = argparse.ArgumentParser()
parser.add_argument("--bundle", required=True)
parser.add_argument("--port", type=int, required=True)
args = parser.parse_args()
server = PipelineServer(args.bundle)
app = FastAPI()


class Question(BaseModel):
    question: str


@app.post("/predict")
async def predict(body: Question) -> dict:
    with dspy.context(lm=server.lm):
        prediction = server.program(**body.model_dump())
    return {name: prediction.get(name) for name in server.outputs}


uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_level="warning")
'''

# What a competent hand-written server looks like: the program off the event loop through dspy.asyncify, enough threads.
COMPETENT_APP = (
    NAIVE_APP.replace(
        "Naive server: FastAPI, an `async def` endpoint calling the program directly: it blocks the loop.",
        "Competent server: FastAPI, `async def` awaiting dspy.asyncify(program) on 64 threads.",
    )
    .replace(
        """    with dspy.context(lm=server.lm):
        prediction = server.program(**body.model_dump())""",
        """    with dspy.context(lm=server.lm):
        prediction = await program(**body.model_dump())""",
    )
    .replace(
        "app = FastAPI()",
        f"dspy.settings.configure(async_max_workers={THREADS})\n"
        "program = dspy.asyncify(server.program)\napp = FastAPI()",
    )
)


# -- child modes: the fake LM, the in-process call, the profile of the REST path ------------------------------------
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
    """PipelineServer.run in a loop on each of --clients threads: the floor any server adds its overhead to."""
    p = argparse.ArgumentParser()
    p.add_argument("--bundle", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--clients", type=int, required=True)
    args = p.parse_args(argv)
    from dspy_registry.runtime.inference import PipelineServer

    server = PipelineServer(args.bundle)
    for n in range(3):  # warm: first calls import and build what later ones reuse
        server.run({"question": QUESTIONS[n % len(QUESTIONS)]})
    lats: list[list[float]] = [[] for _ in range(args.clients)]
    cpu0, start = time.process_time(), time.perf_counter()

    def caller(lat: list[float]) -> None:
        while time.perf_counter() - start < args.seconds:
            t = time.perf_counter()
            server.run({"question": QUESTIONS[len(lat) % len(QUESTIONS)]})
            lat.append(time.perf_counter() - t)

    threads = [threading.Thread(target=caller, args=(lat,)) for lat in lats]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    lat = sorted(x for xs in lats for x in xs)
    print(
        json.dumps(
            {
                "clients": args.clients,
                "window_seconds": round(wall, 2),
                "answers": len(lat),
                "throughput_rps": round(len(lat) / wall, 2),
                "p50_ms": ms(percentile(lat, 50)),
                "p95_ms": ms(percentile(lat, 95)),
                "errors": 0,
                "server_cpu_ms_per_request": round(1000 * cpu / len(lat), 2),
            }
        )
    )


def child_profile(argv: list[str]) -> None:
    """The REST layer alone: the app of `dspyreg serve` (create_app over the bundle) with the program made free (every
    run returns one answer computed beforehand), driven in this process through httpx's ASGI transport (no HTTP
    parsing, no sockets). Prints its CPU per request, and the top entries of cProfile by own time per request."""
    import asyncio
    import cProfile
    import logging
    import pstats

    import httpx

    from dspy_registry.runtime import api

    p = argparse.ArgumentParser()
    p.add_argument("--bundle", required=True)
    p.add_argument("--requests", type=int, required=True)
    args = p.parse_args(argv)
    api.configure_access_log()
    logging.getLogger("dspyreg.access").handlers[0].stream = open(os.devnull, "w")  # noqa: SIM115
    backend = api.StaticBackend(args.bundle)
    canned = backend.server.run({"question": QUESTIONS[0]})
    backend.server.run = lambda inputs: canned  # type: ignore[method-assign]
    app = api.create_app(backend)
    profile = cProfile.Profile()

    async def drive(requests: int) -> float:
        """CPU seconds of `requests` POST /predict, one after the other."""
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
            cpu = time.process_time()
            for _ in range(requests):
                answer = await client.post("/predict", json={"question": QUESTIONS[0]})
                if answer.status_code != 200:
                    raise RuntimeError(f"POST /predict answered {answer.status_code}: {answer.text[:300]}")
            return time.process_time() - cpu

    asyncio.run(drive(20))  # warm
    cpu = asyncio.run(drive(args.requests))
    profile.enable()
    asyncio.run(drive(args.requests))
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    entries = sorted(
        ((tottime, f"{Path(file).name}:{line} {name}") for (file, line, name), (_, _, tottime, _, _) in stats.items()),
        reverse=True,
    )
    waits = ("'poll'", "'select'", "'acquire'", "'release'", "'wait'")  # waiting for the worker thread: not work
    top = [(where, round(1000 * t / args.requests, 3)) for t, where in entries if not any(w in where for w in waits)]
    print(json.dumps({"cpu_ms_per_request": round(1000 * cpu / args.requests, 3), "top": top[:PROFILE_TOP]}))


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


# -- the load generator ---------------------------------------------------------------------------------------------
class CpuMeter:
    """CPU of the server's process tree, the fake LM, this process (the load generator's threads) and the whole
    machine over a window (/proc)."""

    def __init__(self, server_pid: int, lm_pid: int) -> None:
        self.server_pid, self.lm_pid = server_pid, lm_pid

    def snap(self) -> dict[str, Any]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        own = os.times()
        return {
            "wall": time.perf_counter(),
            "server": {pid: cpu_seconds(pid) for pid in process_tree(self.server_pid)},
            "lm": cpu_seconds(self.lm_pid),
            "bench": own.user + own.system,  # this process only: a promote it runs in the window is not its load
            "busy": sum(fields) - fields[3] - fields[4],
            "total": sum(fields),
        }

    @staticmethod
    def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        wall = b["wall"] - a["wall"]
        by_pid = {pid: cpu - a["server"].get(pid, 0.0) for pid, cpu in b["server"].items()}
        return {
            "server_cpu_seconds": round(sum(by_pid.values()), 3),
            "server_cores": round(sum(by_pid.values()) / wall, 2),
            "server_cores_by_pid": {str(pid): round(c / wall, 2) for pid, c in by_pid.items() if c / wall >= 0.01},
            "fake_lm_cores": round((b["lm"] - a["lm"]) / wall, 2),
            "load_generator_cores": round((b["bench"] - a["bench"]) / wall, 2),
            "machine_busy_pct": round(100 * (b["busy"] - a["busy"]) / max(1, b["total"] - a["total"]), 1),
        }


Answer = tuple[float, float, int, str]  # (sent, answered, status, X-Dspyreg-Version)


def load(
    port: int,
    clients: int,
    seconds: float,
    warmup: float,
    meter: CpuMeter,
    during: Callable[[], float] | None = None,
) -> tuple[dict[str, Any], list[Answer]]:
    """`clients` threads posting to /predict back to back; the window follows the warm-up. `during` runs at the start
    of the window (a promotion) and returns the moment it acted."""
    stop_at = [float("inf")]
    records: list[list[Answer]] = [[] for _ in range(clients)]

    def client(i: int) -> None:
        conn, mine = None, records[i]
        while time.perf_counter() < stop_at[0]:
            body = json.dumps({"question": QUESTIONS[(i + len(mine)) % len(QUESTIONS)]})
            conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            started = time.perf_counter()
            try:
                conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                status, version = resp.status, resp.getheader("X-Dspyreg-Version") or ""
            except Exception:  # a dropped or refused connection is an error too
                status, version = -1, ""
                conn.close()
                conn = None
                time.sleep(0.05)
            mine.append((started, time.perf_counter(), status, version))
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    while time.perf_counter() - t0 < warmup or not all(records):
        if time.perf_counter() - t0 > 60:
            break
        time.sleep(0.05)
    before = meter.snap()
    acted = during() if during is not None else None
    stop_at[0] = before["wall"] + seconds
    time.sleep(max(0.0, stop_at[0] - time.perf_counter()))
    after = meter.snap()
    for t in threads:
        t.join(timeout=150)
    every = [r for rs in records for r in rs]
    inside = [r for r in every if before["wall"] <= r[1] <= stop_at[0]]
    ok = sorted(end - start for start, end, status, _ in inside if status == 200)
    cpu = meter.delta(before, after)
    result = {
        "clients": clients,
        "window_seconds": round(seconds, 2),
        "answers": len(ok),
        "throughput_rps": round(len(ok) / seconds, 2),
        "p50_ms": ms(percentile(ok, 50)),
        "p95_ms": ms(percentile(ok, 95)),
        "errors": sum(1 for r in every if r[2] != 200),
        "requests_total": len(every),
        "server_cpu_ms_per_request": round(1000 * cpu["server_cpu_seconds"] / len(ok), 2) if ok else None,
        "cpu": cpu,
        **({"acted_at": acted} if acted is not None else {}),
    }
    return result, every


# -- cold start and promotion ---------------------------------------------------------------------------------------
def accepts(port: int) -> bool:
    """True once the port accepts a connection (a refused one raises OSError: "not yet")."""
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    return True


def startup(proc: Proc, port: int) -> tuple[dict[str, float], list[ImportTime]]:
    """The startup timeline of a server started with PYTHONPROFILEIMPORTTIME=1 (seconds from process start to the
    port accepting connections and to the first 200; its imports, summed at the top level) and its import lines."""
    listening = wait_until(functools.partial(accepts, port), proc, "the port open", every=0.01)
    first = wait_until(functools.partial(post_predict, port), proc, "a first answer", every=0.01)
    imported = import_times(proc.stderr_text())
    top_level = sum(i.cumulative_us for i in imported if i.depth == 0) / 1e6
    timeline = {"imports_s": round(top_level, 3), "listening_s": round(listening, 3), "first_answer_s": round(first, 3)}
    return timeline, imported


def only_in(server: list[ImportTime], baseline: list[ImportTime], top: int = 8) -> list[dict[str, Any]]:
    """The modules `server` imports and `baseline` does not, by top-level package: how many, their own ms summed
    (what they add to the start), and the largest cumulative ms of one of them (which also counts modules both
    import, when that one imported them first); the most own ms first, after a row `(all)` of their totals."""
    seen = {i.module for i in baseline}
    groups: dict[str, list[ImportTime]] = {}
    for i in server:
        if i.module not in seen:
            groups.setdefault(i.module.split(".")[0], []).append(i)
    rows: list[dict[str, Any]] = [
        {
            "package": package,
            "modules": len(found),
            "own_ms": round(sum(i.self_us for i in found) / 1000, 1),
            "cumulative_ms": round(max(i.cumulative_us for i in found) / 1000, 1),
        }
        for package, found in groups.items()
    ]
    every = [i for i in server if i.module not in seen]
    total = {"package": "(all)", "modules": len(every), "own_ms": round(sum(i.self_us for i in every) / 1000, 1)}
    return [{**total, "cumulative_ms": None}, *sorted(rows, key=lambda r: r["own_ms"], reverse=True)[:top]]


def post_predict(port: int) -> bool:
    """True once POST /predict answers 200 (a refused connection raises OSError: "not yet")."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/predict", json.dumps({"question": QUESTIONS[0]}), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200
    finally:
        conn.close()


def swap_times(answers: list[Answer], moved: float, old: str, new: str) -> dict[str, Any]:
    """After the tag moved at `moved`: seconds to the first answer of `new`, and to the last answer of `old` to a
    request sent after the move (from then on every worker answers `new`)."""
    after = [a for a in answers if a[0] >= moved and a[2] == 200]
    first_new = min((a[1] for a in after if a[3] == new), default=None)
    last_old = max((a[1] for a in after if a[3] == old), default=moved)
    return {
        "first_new_s": None if first_new is None else round(first_new - moved, 3),
        "all_new_s": None if first_new is None else round(max(last_old, first_new) - moved, 3),
        "versions_after": dict(Counter(a[3] for a in after)),
    }


def swaps_logged(proc: Proc, version: str, at_least: int = 0) -> int:
    """How many swaps to `version` the server logged (all workers log to the same stderr); with `at_least`, whether
    that many did (a wait_until check)."""
    found = 0
    for line in proc.stderr_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        found += isinstance(event, dict) and event.get("event") == "swapped" and event.get("version") == version
    return found >= at_least if at_least else found


# -- the run --------------------------------------------------------------------------------------------------------
def setup(work: Path, env: dict[str, str]) -> tuple[Path, Path]:
    registry, bundle = work / "registry", work / "bundle"
    states = example_states(work / "states")
    fresh_registry(registry, [(v, states / f"qa-{v}.json") for v in ("v1.1", "v1.0")], env=env)
    run(dspyreg("promote", "v1.1", "--to", "prod", "--registry", registry), env=env)
    run(dspyreg("export", "prod", bundle, "--registry", registry), env=env)
    return registry, bundle


def bench(args: argparse.Namespace) -> dict[str, Any]:
    wall0 = time.perf_counter()
    info = {**asdict(machine()), "packages": packages()}
    me = str(Path(__file__).resolve())
    work = Path(tempfile.mkdtemp(prefix="dspyreg-serve-bench-"))
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
    procs: list[Proc] = []
    results: dict[str, Any] = {"points": [], "cold_start_s": {}, "swap": {}, "profile": {}, "cold_start_why": {}}

    def start(name: str, argv: Sequence[str | Path], extra_env: dict[str, str] | None = None) -> Proc:
        procs.append(Proc(name, argv, {**env, **(extra_env or {})}, work))
        return procs[-1]

    def stop(proc: Proc) -> None:
        proc.stop()
        procs.remove(proc)

    try:
        log(f"setup in {work}")
        registry, bundle = setup(work, env)
        (work / "naive.py").write_text(NAIVE_APP)
        (work / "competent.py").write_text(COMPETENT_APP)
        lm = start(
            "fake_lm", [sys.executable, me, "_fake_lm", "--port", str(lm_port), "--latency-ms", str(args.latency_ms)]
        )
        wait_until(lambda: "fake LM on" in lm.out_path.read_text(), lm, "the fake LM's banner", 30)

        def servers(port: int) -> dict[str, tuple[str, list[str | Path]]]:
            app = ["--bundle", bundle, "--port", str(port)]
            serve = dspyreg("serve", "--registry", registry, "--port", str(port), "--poll-seconds", str(POLL_SECONDS))
            return {
                "naive": ("naive FastAPI (async def, blocking)", [sys.executable, work / "naive.py", *app]),
                "competent": (
                    f"FastAPI + dspy.asyncify, {THREADS} threads",
                    [sys.executable, work / "competent.py", *app],
                ),
                "serve_w1": ("dspyreg serve --workers 1", [*serve, "--workers", "1"]),
                "serve_w2": ("dspyreg serve --workers 2", [*serve, "--workers", "2"]),
            }

        for clients in args.clients:
            log(f"in-process: PipelineServer.run on {clients} threads for {args.seconds:g} s")
            argv = ["--bundle", bundle, "--seconds", str(args.seconds), "--clients", str(clients)]
            base = json.loads(run([sys.executable, me, "_inprocess", *argv], env=env))
            results["points"].append({"key": "inprocess", "server": "in-process PipelineServer.run", **base})

        for key in ("naive", "competent", "serve_w1", "serve_w2"):
            port = free_port()
            label, argv = servers(port)[key]
            srv = start(key, argv)
            wait_until(functools.partial(post_predict, port), srv, "a first answer")
            if key == "serve_w2":  # every worker has its version before the load starts
                wait_until(functools.partial(swaps_logged, srv, "v1.1", 2), srv, "both workers' first swap")
            for clients in args.clients:
                log(f"{label}: {clients} clients for {args.seconds:g} s")
                point, _ = load(port, clients, args.seconds, args.warmup, CpuMeter(srv.pid, lm.pid))
                results["points"].append({"key": key, "server": label, **point})
                log(f"  {point['throughput_rps']} req/s, {point['server_cpu_ms_per_request']} ms CPU/req")
            if key == "serve_w2":
                log("promotion under load: dspyreg promote v1.0 while 32 clients post")

                def promote() -> float:
                    run(dspyreg("promote", "v1.0", "--to", "prod", "--registry", registry), env=env)
                    return time.perf_counter()  # the tag moved at the latest now

                point, answers = load(port, 32, max(args.seconds, 4.0), args.warmup, CpuMeter(srv.pid, lm.pid), promote)
                results["swap"] = {
                    **swap_times(answers, point["acted_at"], "v1.1", "v1.0"),
                    "workers": 2,
                    "workers_that_logged_the_swap": swaps_logged(srv, "v1.0"),
                    "errors": point["errors"],
                }
                log(f"  {results['swap']}")
                run(dspyreg("promote", "v1.1", "--to", "prod", "--registry", registry), env=env)  # as before
            stop(srv)

        for key in ("naive", "competent", "serve_w1"):
            times = []
            for _ in range(args.cold_runs):
                port = free_port()
                _, argv = servers(port)[key]
                srv = start(f"cold_{key}", argv)
                times.append(wait_until(functools.partial(post_predict, port), srv, "a first answer", every=0.01))
                stop(srv)
            results["cold_start_s"][key] = round(statistics.median(times), 3)
            log(f"cold start {key}: {times}")

        log("cold start once more under PYTHONPROFILEIMPORTTIME=1: `dspyreg serve --workers 1` and the naive app")
        imports: dict[str, list[ImportTime]] = {}
        for key in ("serve_w1", "naive"):
            port = free_port()
            srv = start(f"importtime_{key}", servers(port)[key][1], {"PYTHONPROFILEIMPORTTIME": "1"})
            results["cold_start_why"][key], imports[key] = startup(srv, port)
            stop(srv)
        results["cold_start_why"]["only_serve_imports"] = only_in(imports["serve_w1"], imports["naive"])
        results["cold_start_why"]["only_naive_imports"] = only_in(imports["naive"], imports["serve_w1"], top=0)

        log("profile of the REST path in-process")
        out = run(
            [sys.executable, me, "_profile", "--bundle", bundle, "--requests", str(args.profile_requests)], env=env
        )
        results["profile"] = json.loads(out)
    finally:
        for proc in reversed(procs):
            proc.stop()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    info["loadavg_after"] = loadavg()
    settings = {"seconds": args.seconds, "latency_ms": args.latency_ms, "clients": args.clients, "quick": args.quick}
    command = "python benchmarks/serve.py" + (" --quick" if args.quick else "")
    return {
        **results,
        "machine": info,
        "settings": settings,
        "command": command,
        "minutes": (time.perf_counter() - wall0) / 60,
    }


def packages() -> dict[str, str | None]:
    import importlib.metadata as md

    found: dict[str, str | None] = {}
    for name in ("dspy", "litellm", "fastapi", "starlette", "uvicorn", "pydantic"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = None
    return found


# -- targets and the report -----------------------------------------------------------------------------------------
def point(results: dict[str, Any], key: str, clients: int | None = None) -> dict[str, Any] | None:
    return next((p for p in results["points"] if p["key"] == key and clients in (None, p["clients"])), None)


def checks(results: dict[str, Any]) -> dict[str, tuple[str, str, bool]]:
    """(target, measured, met) for each target of the issue that this run measured, by a key a why refers to."""
    found: dict[str, tuple[str, str, bool]] = {}
    low, high = min(results["settings"]["clients"]), max(results["settings"]["clients"])
    base, w1 = point(results, "inprocess", low), point(results, "serve_w1", low)
    if base and w1 and w1["server_cpu_ms_per_request"] is not None:
        over = w1["server_cpu_ms_per_request"] - base["server_cpu_ms_per_request"]
        found["overhead"] = (
            f"server CPU per request <= in-process + {TARGET_OVERHEAD_MS:g} ms (`--workers 1`, {low} clients)",
            f"{w1['server_cpu_ms_per_request']:.2f} vs {base['server_cpu_ms_per_request']:.2f} ms = {over:+.2f} ms",
            over <= TARGET_OVERHEAD_MS,
        )
    w1, w2, good = (point(results, k, high) for k in ("serve_w1", "serve_w2", "competent"))
    if w1 and good:
        found["vs_competent"] = (
            f"`--workers 1` req/s >= the competent baseline at {high} clients",
            f"{w1['throughput_rps']:.1f} vs {good['throughput_rps']:.1f} req/s",
            w1["throughput_rps"] >= good["throughput_rps"],
        )
    if w1 and w2:
        ratio = w2["throughput_rps"] / max(w1["throughput_rps"], 1e-9)
        found["workers"] = (
            f"`--workers 2` >= {TARGET_WORKERS_RATIO:g}x `--workers 1` at {high} clients (where CPU is the limit)",
            f"{w2['throughput_rps']:.1f} vs {w1['throughput_rps']:.1f} req/s = {ratio:.2f}x; machine "
            f"{w2['cpu']['machine_busy_pct']:.0f}% busy",
            ratio >= TARGET_WORKERS_RATIO,
        )
    cold = results["cold_start_s"]
    if "serve_w1" in cold and "naive" in cold:
        found["cold_start"] = (
            f"cold start to the first answer <= the naive app's + {TARGET_COLD_START_S:g} s",
            f"{cold['serve_w1']:.2f} vs {cold['naive']:.2f} s = {cold['serve_w1'] - cold['naive']:+.2f} s",
            cold["serve_w1"] - cold["naive"] <= TARGET_COLD_START_S,
        )
    swap = results["swap"]
    if swap:
        limit = TARGET_SWAP_S + POLL_SECONDS
        found["swap"] = (
            f"a promoted version answers on every worker within {TARGET_SWAP_S:g} s + the poll ({POLL_SECONDS:g} s)"
            " under load",
            f"first {figure(swap['first_new_s'], '{:.2f}')} s, all {figure(swap['all_new_s'], '{:.2f}')} s; "
            f"{swap['workers_that_logged_the_swap']}/{swap['workers']} workers logged the swap",
            swap["all_new_s"] is not None and swap["all_new_s"] <= limit and swap["errors"] == 0,
        )
    errors = sum(p.get("errors", 0) for p in results["points"])
    found["errors"] = ("no errors (any non-200 or failed connection)", f"{errors}", errors == 0)
    return found


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for each target of the issue that this run measured."""
    return list(checks(results).values())


HEADERS = ["server", "clients", "req/s", "p50 ms", "p95 ms", "errors", "server CPU ms/req", "server cores", "machine"]


def rows(results: dict[str, Any]) -> list[list[str]]:
    return [
        [
            p["server"],
            str(p["clients"]),
            figure(p["throughput_rps"], "{:.1f}"),
            figure(p["p50_ms"], "{:.0f}"),
            figure(p["p95_ms"], "{:.0f}"),
            str(p["errors"]),
            figure(p["server_cpu_ms_per_request"], "{:.2f}"),
            figure(p.get("cpu", {}).get("server_cores"), "{:.2f}"),
            figure(p.get("cpu", {}).get("machine_busy_pct"), "{:.0f}%"),
        ]
        for p in results["points"]
    ]


def report(results: dict[str, Any]) -> str:
    m, s, pk = results["machine"], results["settings"], results["machine"]["packages"]
    facts = {
        "measured": m["measured"],
        "machine": f"{m['nproc']} cores ({m['cpu']}), {m['os']}; load average {m['loadavg']} / {m['loadavg_after']}",
        "software": f"Python {m['python']}, " + ", ".join(f"{k} {v}" for k, v in pk.items()),
        "dspyreg": m["dspyreg_source"],
        "fake LM": f"{s['latency_ms']:g} ms per call, 3 calls per request",
        "seconds per point": f"{s['seconds']:g}",
        "whole run": f"{results['minutes']:.1f} min",
        "reproduce": f"`{results['command']}`",
    }
    found = checks(results)
    cold = markdown_table(
        ["server", "cold start to the first answer (s, median)"],
        [(key, f"{value:.2f}") for key, value in results["cold_start_s"].items()],
        numeric=(1,),
    )
    layer = results["profile"].get("cpu_ms_per_request")
    cold += f"\n\n{facts_table({'REST layer CPU per request (program free, ASGI, no HTTP parsing)': f'{layer} ms'})}"
    parts = [facts_table(facts), markdown_table(HEADERS, rows(results), numeric=range(1, len(HEADERS))), cold]
    parts.append(targets_table(list(found.values())))
    return "\n\n".join(parts + whys(results, {key for key, (_, _, met) in found.items() if not met}))


def whys(results: dict[str, Any], missed: set[str]) -> list[str]:
    """The tables that say why each missed target was missed."""
    found = []
    top = results["profile"].get("top") or []
    if top and missed & {"overhead", "vs_competent"}:
        found.append(markdown_table(["REST layer, top own time (cProfile, program free)", "ms/req"], top, numeric=(1,)))
    if "workers" in missed:
        found.append(cpu_split(results))
    why = results.get("cold_start_why") or {}
    if "cold_start" in missed and why:
        found.append(
            markdown_table(
                ["startup under PYTHONPROFILEIMPORTTIME=1", "imports s (top level)", "port open s", "first answer s"],
                [
                    (key, f"{t['imports_s']:.2f}", f"{t['listening_s']:.2f}", f"{t['first_answer_s']:.2f}")
                    for key, t in why.items()
                    if not key.startswith("only_")
                ],
                numeric=(1, 2, 3),
            )
        )
        found.append(
            markdown_table(
                ["imported by serve_w1, not naive (by package)", "modules", "own ms", "largest cumulative ms"],
                [
                    (f"`{r['package']}`", r["modules"], f"{r['own_ms']:.1f}", figure(r["cumulative_ms"], "{:.1f}"))
                    for r in [*why["only_serve_imports"], *naive_only(why)]
                ],
                numeric=(1, 2, 3),
            )
        )
    return found


def naive_only(why: dict[str, Any]) -> list[dict[str, Any]]:
    """The `(all)` row of what the naive app imports and serve does not, relabelled, for the same table."""
    return [{**row, "package": "(all, naive only)"} for row in why.get("only_naive_imports", [])[:1]]


def cpu_split(results: dict[str, Any]) -> str:
    """Where the CPU went at the most clients, `--workers 1` and `--workers 2`: cores of the server, the fake LM and
    the load generator, and how busy the whole machine was."""
    high, nproc = max(results["settings"]["clients"]), results["machine"]["nproc"]
    rows = []
    for key in ("serve_w1", "serve_w2"):
        p = point(results, key, high)
        cpu = (p or {}).get("cpu")
        if p and cpu:
            rows.append(
                [
                    f"{p['server']}, {high} clients",
                    f"{cpu['server_cores']:.2f}",
                    " + ".join(f"{c:.2f}" for c in cpu["server_cores_by_pid"].values()),
                    f"{cpu['fake_lm_cores']:.2f}",
                    figure(cpu.get("load_generator_cores"), "{:.2f}"),
                    figure(rest_of_machine(cpu, nproc), "{:.2f}"),
                    f"{cpu['machine_busy_pct']:.0f}% of {nproc}",
                ]
            )
    headers = ["CPU split (cores)", "server", "by process", "fake LM", "load generator", "the rest", "machine busy"]
    return markdown_table(headers, rows, numeric=(1, 3, 4, 5))


def rest_of_machine(cpu: dict[str, Any], nproc: int) -> float | None:
    """Busy cores of the machine that were neither the server, the fake LM nor the load generator (other tenants)."""
    if cpu.get("load_generator_cores") is None:
        return None
    ours = cpu["server_cores"] + cpu["fake_lm_cores"] + cpu["load_generator_cores"]
    return max(0.0, cpu["machine_busy_pct"] / 100 * nproc - ours)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per point [20]")
    p.add_argument("--quick", action="store_true", help="3 s per point, one cold start each, docs untouched")
    p.add_argument("--warmup", type=float, default=2.0, help="minimum warm-up seconds per point [2]")
    p.add_argument("--latency-ms", type=float, default=100.0, help="fake LM latency per call [100]")
    p.add_argument("--clients", default="32,128", help="concurrent clients per point [32,128]")
    p.add_argument("--cold-runs", type=int, default=5, help="cold starts per server, median reported [5]")
    p.add_argument("--profile-requests", type=int, default=1000, help="requests profiled in-process [1000]")
    p.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    p.add_argument("--keep", action="store_true", help="keep the work folder (registry, bundle, server logs)")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.cold_runs, args.profile_requests = 3.0, 1.0, 1, 300
    args.clients = sorted({int(c) for c in args.clients.split(",") if c.strip()})
    args.out = RESULTS / ("serve-quick.json" if args.quick else "serve.json")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    children = {"_fake_lm": child_fake_lm, "_inprocess": child_inprocess, "_profile": child_profile}
    if argv and argv[0] in children:
        children[argv[0]](argv[1:])
        return 0
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops every subprocess on a plain kill
    results = bench(args)
    results["targets"] = [{"target": t, "measured": m, "met": ok} for t, m, ok in targets(results)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    if not (args.quick or args.no_docs):
        write_generated_block("serving", "serve.py", SECTION, report(results))
        log(f"updated the {SECTION} section of docs/performance.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
