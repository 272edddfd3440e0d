"""Shared helpers for the benchmark scripts: machine description, timing, tables, data."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
# corpora and sets the benchmarks build: outside the repository, never committed
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "lshdb-bench")
SHARED = os.environ.get("LSHDB_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))


def machine() -> str:
    """One line describing the machine and the software versions."""
    import lmdb

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, numpy {np.__version__}, lmdb {lmdb.__version__}")


def timed(f: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = f()
    return time.perf_counter() - t0, out


def percentiles(xs: Sequence[float]) -> dict[str, float]:
    a = np.asarray(xs)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def table(rows: list[dict[str, Any]], cols: list[str] | None = None) -> str:
    """A markdown table."""
    if not rows:
        return ""
    cols = cols or list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0 or abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def write_result(name: str, title: str, body: str, command: str) -> str:
    """Write ``benchmarks/results/NAME.md`` and print it."""
    os.makedirs(RESULTS, exist_ok=True)
    text = (f"## {title}\n\nMachine: {machine()}\n\nCommand: `{command}` "
            f"({time.strftime('%Y-%m-%d')})\n\n{body}\n")
    with open(os.path.join(RESULTS, f"{name}.md"), "w") as f:
        f.write(text)
    print(text)
    return text


def in_subprocess(code: str) -> str:
    """Run ``code`` in a fresh interpreter and return its stdout."""
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, cwd=ROOT).stdout


def minilm() -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The real MiniLM embeddings (base, queries, exact cosine neighbours), if present."""
    path = os.path.join(SHARED, "data", "debian_minilm_dev.npz")
    if not os.path.exists(path):
        return None
    d = np.load(path)
    return d["base"].astype(np.float32), d["queries"].astype(np.float32), d["gt_cos"]


CLUSTERED = {"clustered-100k": 100_000, "clustered-200k": 200_000, "clustered-1m": 1_000_000}


def dense_set(name: str, n_queries: int, seed: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """A benchmark set by name: (base, queries, exact neighbours or None to compute).

    ``minilm`` is the real embeddings (None, with a message, when they are absent);
    ``clustered-100k`` / ``-200k`` / ``-1m`` are generated 128-d clustered vectors.
    """
    if name == "minilm":
        real = minilm()
        if real is None:
            print("minilm: ../shared/data/debian_minilm_dev.npz not found; skipped")
            return None
        X, Q, gt = real
        return X, Q[:n_queries], gt[:n_queries]
    from lshdb.io.datasets import clustered

    X, Q = clustered(CLUSTERED[name], 128, seed=seed, n_queries=n_queries)
    return X, Q, None
