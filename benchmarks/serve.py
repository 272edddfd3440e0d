"""Serving benchmark: `lshdb serve` under a bounded load from client processes on loopback.

Each round starts from a fresh copy of a cached 128-d index (clustered, default settings)
and measures, on the same 1,000 held-out queries (k=10):

1. the embedded Reader in one process (one snapshot, ``r.query`` in a loop);
2. HTTP with 1 and with 2 workers, a fixed number of single-vector queries from several
   client processes (``lshdb.connect``, one keep-alive connection each), without and with a
   writer process beside the server adding 1,000 vectors/s (batches of 100, full
   durability, through the embedded API as ``lshdb add`` would);

throughput (requests/s over the whole load), p50 and p99 latency per request, and the CPU
time per request of the workers and of the clients. The machine is shared: the CPU that
other processes used meanwhile (in cores) is measured too, since it is what the workers and
clients could not have. Rounds are interleaved; tables give the median of the rounds and
ratios measured within each round.
Then, once: 100,000+ requests against 2 workers with the writer running and one worker
killed with SIGKILL midway (failed answers counted), and the time from ``lshdb serve`` to
the first answer with 2 workers on a 1,000,000-vector index.

usage: flock /tmp/lshdb-bench.lock python benchmarks/serve.py [--rows 200000]
       [--requests 6000] [--clients 4] [--rounds 3] [--kill-requests 100000]
       [--startup-rows 1000000] [--seed 0]
Writes benchmarks/results/serve.md. Indexes are cached in ~/.cache/lshdb-bench/.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lshdb  # noqa: E402
from benchmarks.common import CACHE, ROOT, median, table, write_result  # noqa: E402
from lshdb.io.datasets import clustered  # noqa: E402

DIM = 128
K = 10
WRITE_RATE, WRITE_BATCH = 1000, 100


def cached_index(rows: int, seed: int) -> tuple[str, np.ndarray, np.ndarray]:
    """A cached index of ``rows`` clustered vectors, its queries and vectors for writers."""
    X, Q = clustered(rows + 400_000, DIM, seed=seed, n_queries=1000)
    path = os.path.join(CACHE, f"serve-{rows}-{seed}.lshdb")
    if not os.path.isdir(path):
        os.makedirs(CACHE, exist_ok=True)
        tmp = path + ".building"
        shutil.rmtree(tmp, ignore_errors=True)
        t0 = time.perf_counter()
        with lshdb.create(tmp, metric="cosine", dim=DIM) as index:
            for s in range(0, rows, 100_000):
                index.add(range(s, min(rows, s + 100_000)), X[s : min(rows, s + 100_000)])
        os.rename(tmp, path)
        print(f"built {path} in {time.perf_counter() - t0:.0f} s", flush=True)
    return path, Q, X[rows:]


class Server:
    def __init__(self, path: str, workers: int, log: str) -> None:
        self.t0 = time.perf_counter()
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lshdb", "serve", path, "--port", "0", "--workers",
             str(workers), "--log-level", "warning", "--max-batch", "1000"],
            stdout=subprocess.PIPE, stderr=self.log, cwd=ROOT)
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        line = self.proc.stdout.readline() if ready else b""  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"lshdb serve did not start; see {log}")
        info = json.loads(line)
        self.url = info["url"]
        self.client = lshdb.connect(self.url)

    def wait_workers(self, n: int, q: np.ndarray) -> float:
        """Seconds from the start to the first answer, after which every worker is waited for."""
        first = None
        for _ in range(2400):
            try:
                if first is None:
                    self.client.query(q, k=K)
                    first = time.perf_counter() - self.t0
                ws = self.client.stats(buckets=False)["server"]["workers"]
                if all(w["pid"] for w in ws) and len(ws) == n:
                    return first
            except (OSError, lshdb.LshdbError):
                self.client.close()
            time.sleep(0.005)
        raise RuntimeError("the server did not answer")

    def workers(self) -> list[dict[str, Any]]:
        return self.client.stats(buckets=False)["server"]["workers"]  # type: ignore[no-any-return]

    def stop(self) -> int:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(120)
        self.proc.stdout.close()  # type: ignore[union-attr]
        self.log.close()
        return rc


def _client(url: str, Q: np.ndarray, n: int, offset: int, go: Any, out: Any) -> None:
    c = lshdb.connect(url)
    c.query(Q[0], k=K)  # connection and metric before the clock starts
    lat = np.zeros(n)
    failed, wrong = 0, 0
    go.wait()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(n):
        q = Q[(offset + i) % len(Q)]
        a = time.perf_counter()
        try:
            res = c.query(q, k=K)
            d = [x[1] for x in res]
            wrong += len(res) != K or d != sorted(d)
        except Exception:  # any failure is counted; the load goes on
            failed += 1
        lat[i] = time.perf_counter() - a
    out.put((t0, time.perf_counter(), lat, failed, wrong, time.process_time() - cpu0))


def _writer(path: str, V: np.ndarray, tag: str, go: Any, stop: Any, out: Any) -> None:
    index = lshdb.open(path)
    go.wait()
    t0 = time.perf_counter()
    i = 0
    while not stop.is_set() and i + WRITE_BATCH <= len(V):
        index.add([f"{tag}-{j}" for j in range(i, i + WRITE_BATCH)], V[i : i + WRITE_BATCH])
        i += WRITE_BATCH
        pause = t0 + i / WRITE_RATE - time.perf_counter()
        if pause > 0:
            stop.wait(pause)
    out.put(i / (time.perf_counter() - t0))
    index.close()


def _cpu(pid: int) -> float:
    """CPU seconds a process has used (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    """CPU seconds every core of the machine has been busy since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def load(url: str, Q: np.ndarray, requests: int, clients: int, path: str | None = None,
         V: np.ndarray | None = None, tag: str = "", kill: Any = None,
         server_pids: list[int] | None = None) -> dict[str, Any]:
    """``requests`` queries from ``clients`` processes (and a writer if ``V`` is given),
    with the CPU time of the server's workers, of the clients and writer, and of every
    other process on the machine meanwhile (the machine is shared)."""
    ctx = mp.get_context("fork")
    go, stop, out, wout = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Queue()
    per = requests // clients
    procs = [ctx.Process(target=_client, args=(url, Q, per, 997 * c, go, out))
             for c in range(clients)]
    writer = ctx.Process(target=_writer, args=(path, V, tag, go, stop, wout)) \
        if V is not None else None
    for p in procs + ([writer] if writer else []):
        p.start()
    time.sleep(0.5)  # every client connected
    mine = [p.pid for p in procs + ([writer] if writer else [])]
    pids = server_pids or []
    cpu0 = [_cpu(p) for p in pids], [_cpu(p) for p in mine], _machine_busy()
    wall0 = time.perf_counter()
    go.set()
    if kill is not None:
        kill()
    results = [out.get(timeout=900) for _ in procs]
    stop.set()
    rate = wout.get(timeout=60) if writer else None
    server_cpu = sum(_cpu(p) - c for p, c in zip(pids, cpu0[0]))
    own_cpu = sum(_cpu(p) - c for p, c in zip(mine, cpu0[1]))
    others = (_machine_busy() - cpu0[2] - server_cpu - own_cpu) / (time.perf_counter() - wall0)
    for p in procs + ([writer] if writer else []):
        p.join(60)
    start, end = min(r[0] for r in results), max(r[1] for r in results)
    lat = np.concatenate([r[2] for r in results])
    return {"requests": len(lat), "throughput": len(lat) / (end - start),
            "p50_ms": float(np.percentile(lat, 50) * 1e3),
            "p99_ms": float(np.percentile(lat, 99) * 1e3),
            "failed": sum(r[3] for r in results), "wrong": sum(r[4] for r in results),
            "client_cpu_ms_per_request": sum(r[5] for r in results) / len(lat) * 1e3,
            "server_cpu_ms_per_request": server_cpu / len(lat) * 1e3,
            "others_cores": max(0.0, others), "writer_rate": rate}


def embedded(path: str, Q: np.ndarray, requests: int) -> dict[str, Any]:
    """The embedded Reader in one process: the same queries, one after the other."""
    with lshdb.open(path, readonly=True) as index, index.reader() as r:
        for q in Q[:50]:
            r.query(q, k=K)
        lat = np.zeros(requests)
        t0 = time.perf_counter()
        for i in range(requests):
            a = time.perf_counter()
            r.query(Q[i % len(Q)], k=K)
            lat[i] = time.perf_counter() - a
        dt = time.perf_counter() - t0
    return {"requests": requests, "throughput": requests / dt,
            "p50_ms": float(np.percentile(lat, 50) * 1e3),
            "p99_ms": float(np.percentile(lat, 99) * 1e3)}


SCENARIOS = (("1 worker", 1, False), ("2 workers", 2, False),
             ("1 worker + writer 1,000/s", 1, True), ("2 workers + writer 1,000/s", 2, True))


def rounds(base: str, Q: np.ndarray, V: np.ndarray, args: Any, work: str) -> tuple[
        list[dict[str, Any]], list[dict[str, Any]]]:
    per: dict[str, list[dict[str, Any]]] = {}
    ratios: list[dict[str, Any]] = []
    vi = 0
    for rnd in range(args.rounds):
        path = os.path.join(work, f"round{rnd}.lshdb")
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(base, path)
        got = {"embedded Reader, 1 process": embedded(path, Q, args.requests)}
        for label, n, with_writer in SCENARIOS:
            s = Server(path, n, os.path.join(work, "serve.log"))
            s.wait_workers(n, Q[0])
            Vs = None
            if with_writer:
                Vs, vi = V[vi : vi + 60_000], vi + 60_000
            before = s.workers()
            s.client.close()  # an idle connection of its own would skew the spread
            got[label] = load(s.url, Q, args.requests, args.clients, path, Vs, f"r{rnd}{n}",
                              server_pids=[w["pid"] for w in before])
            got[label]["per_worker"] = [a["requests"] - b["requests"]
                                        for a, b in zip(s.workers(), before)]
            rc = s.stop()
            print(f"round {rnd} {label}: {got[label]['throughput']:.0f}/s "
                  f"p50 {got[label]['p50_ms']:.2f} p99 {got[label]['p99_ms']:.2f} ms "
                  f"(exit {rc})", flush=True)
        print(f"round {rnd} embedded: {got['embedded Reader, 1 process']['throughput']:.0f}/s",
              flush=True)
        for k, v in got.items():
            per.setdefault(k, []).append(v)
        e = got["embedded Reader, 1 process"]["throughput"]
        ratios.append({
            "round": rnd + 1,
            "HTTP 1 worker / embedded": got["1 worker"]["throughput"] / e,
            "2 workers / 1 worker": got["2 workers"]["throughput"] / got["1 worker"]["throughput"],
            "p99/p50, 1 worker + writer": got["1 worker + writer 1,000/s"]["p99_ms"]
            / got["1 worker + writer 1,000/s"]["p50_ms"],
            "p99/p50, 2 workers + writer": got["2 workers + writer 1,000/s"]["p99_ms"]
            / got["2 workers + writer 1,000/s"]["p50_ms"],
            "requests per worker, 2 workers": " / ".join(
                str(x) for x in got["2 workers"]["per_worker"]),
            "other processes, cores (mean of the setups)": float(np.mean(
                [g["others_cores"] for g in got.values() if "others_cores" in g]))})
    rows = []
    for label, runs in per.items():
        row: dict[str, Any] = {"setup": label}
        for f in ("throughput", "p50_ms", "p99_ms"):
            row[f] = median([r[f] for r in runs])
        row["p99/p50"] = median([r["p99_ms"] / r["p50_ms"] for r in runs])
        if "failed" in runs[0]:
            row["failed"] = sum(r["failed"] + r["wrong"] for r in runs)
            row["server CPU ms/request"] = median([r["server_cpu_ms_per_request"] for r in runs])
            row["client CPU ms/request"] = median([r["client_cpu_ms_per_request"] for r in runs])
            row["other processes, cores"] = median([r["others_cores"] for r in runs])
        if runs[0].get("writer_rate"):
            row["writer vectors/s"] = median([r["writer_rate"] for r in runs])
        rows.append(row)
    return rows, ratios


def kill_run(base: str, Q: np.ndarray, V: np.ndarray, args: Any, work: str) -> dict[str, Any]:
    path = os.path.join(work, "kill.lshdb")
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(base, path)
    s = Server(path, 2, os.path.join(work, "serve.log"))
    s.wait_workers(2, Q[0])
    victim = s.workers()[0]["pid"]
    pids = [w["pid"] for w in s.workers()]
    s.client.close()

    def kill() -> None:
        time.sleep(5)
        os.kill(victim, signal.SIGKILL)

    import threading

    t = threading.Thread(target=kill)
    got = load(s.url, Q, args.kill_requests, args.clients, path, V[-200_000:], "kill",
               kill=t.start, server_pids=pids)
    t.join()
    ws = s.workers()
    got["restarts"] = sum(w["restarts"] for w in ws)
    got["exit"] = s.stop()
    return got


def startup(args: Any, work: str) -> list[float]:
    path, Q, _ = cached_index(args.startup_rows, args.seed)
    times = []
    for _ in range(3):
        s = Server(path, 2, os.path.join(work, "serve.log"))
        times.append(s.wait_workers(2, Q[0]))
        s.stop()
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kill-requests", type=int, default=100_000)
    ap.add_argument("--startup-rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    base, Q, V = cached_index(args.rows, args.seed)
    work = tempfile.mkdtemp(prefix="lshdb-serve-bench-")
    try:
        rows, ratios = rounds(base, Q, V, args, work)
        killed = kill_run(base, Q, V, args, work) if args.kill_requests else None
        starts = startup(args, work) if args.startup_rows else []
    finally:
        shutil.rmtree(work, ignore_errors=True)
    body = [f"Index: {args.rows:,} x {DIM} clustered vectors (cosine, default settings); "
            f"{args.requests:,} single-vector queries (k={K}) per setup from {args.clients} "
            f"client processes (lshdb.connect, keep-alive), median of {args.rounds} "
            "interleaved rounds; the writer adds batches of 100 (full durability) through "
            "the embedded API beside the server.", "", table(rows), "",
            "Ratios within each round:", "", table(ratios), ""]
    if killed:
        body += [f"{killed['requests']:,} requests from {args.clients} clients against 2 "
                 f"workers with the writer running ({killed['writer_rate']:.0f} vectors/s), "
                 f"one worker killed with SIGKILL after 5 s: {killed['failed']} failed and "
                 f"{killed['wrong']} malformed answers, {killed['restarts']} worker replaced, "
                 f"{killed['throughput']:.0f} requests/s, p50 {killed['p50_ms']:.2f} ms, "
                 f"p99 {killed['p99_ms']:.2f} ms; exit status after SIGTERM "
                 f"{killed['exit']}.", ""]
    if starts:
        body += [f"Start to first answer, 2 workers, {args.startup_rows:,}-vector index: "
                 + ", ".join(f"{t:.2f}" for t in starts) + f" s (median {median(starts):.2f} s).",
                 ""]
    cmd = "flock /tmp/lshdb-bench.lock python benchmarks/serve.py " + " ".join(sys.argv[1:])
    write_result("serve", "Serving over HTTP (lshdb serve)", "\n".join(body), cmd.strip())


if __name__ == "__main__":
    main()
