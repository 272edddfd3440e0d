"""Assemble benchmarks/RESULTS.md from the per-benchmark files in benchmarks/results/.

usage: python benchmarks/collect.py
"""

from __future__ import annotations

import glob
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ORDER = ["ann", "guarantees", "serve", "longruns", "tuning", "tuning_200k", "tuning_1m", "jaccard_index", "minhash", "dedup"]


def main() -> None:
    files = sorted(glob.glob(os.path.join(HERE, "results", "*.md")),
                   key=lambda p: (ORDER.index(os.path.basename(p)[:-3])
                                  if os.path.basename(p)[:-3] in ORDER else 99, p))
    parts = ["# Benchmark results\n",
             "Each section was written by the script named in its `Command` line, on the "
             "machine named in its `Machine` line. Timings on this shared 2-core machine vary "
             "by about +-35% between runs; ratios measured within one run are stable.\n"]
    for p in files:
        with open(p) as f:
            parts.append(f.read().strip() + "\n")
    with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
        f.write("\n".join(parts))
    print(f"wrote RESULTS.md from {len(files)} result files")


if __name__ == "__main__":
    main()
