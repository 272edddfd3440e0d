"""Per-worker counters in memory shared by the supervisor and its workers.

One row of int64 fields per worker slot, in an anonymous file the supervisor creates and
hands to each worker by descriptor. Each field has one writer (the worker owning the row,
from its event-loop thread; ``restarts``, and ``connections`` once the worker is dead, the
supervisor), so no lock is needed; any worker reads every row to answer ``/stats`` and to
spread connections (:mod:`lshdb.serve.accept`).
"""

from __future__ import annotations

import mmap
import os
import tempfile
import time
from typing import Any

import numpy as np

__all__ = ["Counters", "FIELDS", "GONE"]

FIELDS = ("pid", "started_ns", "restarts", "connections", "requests", "query_requests",
          "queries", "query_ns", "write_requests", "items_written", "errors_4xx", "errors_5xx")
# the connections of a dead worker's slot until its successor starts: nobody defers to it
GONE = 1 << 40
_COL = {name: i for i, name in enumerate(FIELDS)}


class Counters:
    """The shared table: ``Counters.create(n)`` in the supervisor, ``Counters(fd, n)`` in a
    worker (the same descriptor, inherited)."""

    def __init__(self, fd: int, n_slots: int) -> None:
        self.fd = fd
        self.n_slots = n_slots
        self._map = mmap.mmap(fd, n_slots * len(FIELDS) * 8)
        self.table = np.frombuffer(self._map, dtype=np.int64).reshape(n_slots, len(FIELDS))

    @classmethod
    def create(cls, n_slots: int) -> Counters:
        """A zeroed table in a file with no name (it vanishes with the last process)."""
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("lshdb-serve-counters")
        else:
            fd, name = tempfile.mkstemp(prefix="lshdb-serve-")
            os.unlink(name)
        os.ftruncate(fd, n_slots * len(FIELDS) * 8)
        return cls(fd, n_slots)

    def begin(self, slot: int) -> None:
        """Zero the slot's counters for a new worker process (its restarts stay)."""
        restarts = int(self.table[slot, _COL["restarts"]])
        self.table[slot] = 0
        self.table[slot, _COL["restarts"]] = restarts
        self.table[slot, _COL["pid"]] = os.getpid()
        self.table[slot, _COL["started_ns"]] = time.time_ns()

    def add(self, slot: int, field: str, n: int = 1) -> None:
        self.table[slot, _COL[field]] += n

    def set(self, slot: int, field: str, value: int) -> None:
        self.table[slot, _COL[field]] = value

    def column(self, field: str) -> np.ndarray:
        """One field of every slot (a view: it follows the other workers' writes)."""
        return self.table[:, _COL[field]]

    def rows(self) -> list[dict[str, Any]]:
        """Every worker's counters, as JSON-ready dicts."""
        out = []
        now = time.time_ns()
        for slot, row in enumerate(self.table.tolist()):
            r: dict[str, Any] = dict(zip(FIELDS, row))
            if r["connections"] == GONE:
                r["connections"] = 0
            started = r.pop("started_ns")
            r["uptime_s"] = round((now - started) / 1e9, 3) if started else 0.0
            r["query_seconds"] = round(r.pop("query_ns") / 1e9, 6)
            out.append({"worker": slot, **r})
        return out

    def close(self) -> None:
        del self.table
        self._map.close()
