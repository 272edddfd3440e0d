"""``lshdb serve``: a supervisor process that binds the socket and keeps N workers running.

The supervisor opens the index once to check it and to clear the reader slots that dead
processes left (LMDB's ``reader_check``), closes it, binds the listening socket, and starts
each worker as a new interpreter (``python -m lshdb.serve.worker``) that opens the index by
itself. A worker that dies (a SIGKILL, a crash) is replaced in its slot; the others keep
answering meanwhile. SIGTERM or SIGINT stops it gracefully: each worker finishes its
in-flight requests (so no write is cut short and the write lock is released), then the
supervisor exits with status 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import IO, Any, cast

from ..errors import InvalidParameterError, LshdbError
from .counters import GONE, Counters

__all__ = ["run", "check_installed", "SLOTS_PER_WORKER"]

# reader slots one worker may hold at once: the event loop's snapshot, a write thread's
# look-ups, and py-lmdb's spare transaction
SLOTS_PER_WORKER = 4
SPARE_SLOTS = 16  # for writers, backups and CLI readers beside the server
QUICK_EXIT = 5.0  # a worker that fails sooner than this after its start counts as failing
MAX_QUICK_FAILURES = 3


def check_installed() -> None:
    """Raise a clear error if the ``serve`` extra is missing."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise LshdbError(f"lshdb serve needs starlette and uvicorn ({exc.name} is missing): "
                         "pip install 'lshdb[serve]'") from None


def default_workers() -> int:
    """One worker per CPU this process may use: queries are CPU work."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def run(path: str, host: str = "127.0.0.1", port: int = 8000, workers: int | None = None,
        readonly: bool = False, token_file: str | None = None, max_body: int = 16 << 20,
        max_batch: int = 1000, write_timeout: float = 5.0, log_level: str = "info",
        access_log: bool = False) -> int:
    """Serve the index at ``path`` over HTTP until SIGTERM or SIGINT; returns the exit status.

    Prints one JSON line on stdout once the socket listens: ``{"url", "workers", "pid"}``
    (with ``port=0`` the system chooses a free port and the line says which).

    Raises
    ------
    LshdbError
        The serve extra is missing, the index cannot be opened, or the settings are invalid.
    """
    check_installed()
    from ..index.index import open as open_index

    n = workers if workers is not None else default_workers()
    if n < 1:
        raise InvalidParameterError(f"--workers must be >= 1; found {n}")
    if not 0 <= port <= 65535:
        raise InvalidParameterError(f"--port must be in 0..65535; found {port}")
    if max_body < 1 or max_batch < 1:
        raise InvalidParameterError("--max-body and --max-batch must be >= 1")
    if write_timeout < 0:
        raise InvalidParameterError(f"--write-timeout must be >= 0; found {write_timeout}")
    token = _read_token(token_file) if token_file else None
    path = os.path.abspath(path)
    with open_index(path, readonly=True) as index:
        slots = index.reader_slots(clear_stale=True)
        metric = index.metric.name
    need = n * SLOTS_PER_WORKER + SPARE_SLOTS
    if need > slots["max"]:
        raise InvalidParameterError(
            f"{n} workers may hold {n * SLOTS_PER_WORKER} LMDB reader slots (plus "
            f"{SPARE_SLOTS} kept for other processes), more than the index's {slots['max']}; "
            "run fewer workers")
    sock = socket.create_server((host, port), backlog=2048)
    sock.set_inheritable(True)
    config = {"path": path, "readonly": readonly, "token": token, "max_body": max_body,
              "max_batch": max_batch, "write_timeout": write_timeout, "workers": n,
              "log_level": log_level, "access_log": access_log,
              "grace": int(write_timeout) + 30, "parent": os.getpid(), "fd": sock.fileno()}
    counters = Counters.create(n)
    config["counters_fd"] = counters.fd
    bound = sock.getsockname()
    url = f"http://{_url_host(bound[0])}:{bound[1]}"
    sup = _Supervisor(config, sock, counters)
    try:
        return sup.serve(url, metric, slots["cleared"])
    finally:
        sock.close()
        counters.close()
        os.close(counters.fd)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _read_token(token_file: str) -> str:
    try:
        with open(token_file, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as exc:
        raise LshdbError(f"cannot read the token file {token_file}: {exc.strerror}") from None
    if not token or any(c.isspace() for c in token):
        raise InvalidParameterError(
            f"the token file {token_file} must hold one token (no spaces); found "
            f"{'nothing' if not token else 'whitespace inside it'}")
    return token


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    started: float


class _Supervisor:
    def __init__(self, config: dict[str, Any], sock: socket.socket, counters: Counters) -> None:
        self.config = config
        self.sock = sock
        self.counters = counters
        self.workers: list[_Worker | None] = [None] * int(config["workers"])
        self.stop_signal = 0
        self.quick_failures = 0

    def _say(self, message: str) -> None:
        print(f"lshdb serve: {message}", file=sys.stderr, flush=True)

    def _start(self, slot: int) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lshdb.serve.worker"], stdin=subprocess.PIPE,
            stdout=sys.stderr.fileno(), pass_fds=(self.sock.fileno(), self.counters.fd),
            start_new_session=True)  # a terminal's ^C reaches the supervisor, which passes it on
        stdin = cast(IO[bytes], proc.stdin)  # a pipe: stdin=PIPE
        stdin.write(json.dumps({**self.config, "slot": slot}).encode())
        stdin.close()
        self.workers[slot] = _Worker(proc, time.monotonic())

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop_signal = signum

    def serve(self, url: str, metric: str, cleared: int) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        for slot in range(len(self.workers)):
            self._start(slot)
        print(json.dumps({"url": url, "workers": len(self.workers), "pid": os.getpid()}),
              flush=True)
        self._say(f"serving {self.config['path']} ({metric}) at {url} with "
                  f"{len(self.workers)} worker(s)"
                  + (f"; cleared {cleared} stale reader slot(s)" if cleared else ""))
        while not self.stop_signal:
            for slot, w in enumerate(self.workers):
                if w is not None and w.proc.poll() is not None and not self.stop_signal:
                    if not self._replace(slot, w):
                        self._stop()
                        return 1
            time.sleep(0.05)
        self._say(f"{signal.Signals(self.stop_signal).name}: finishing in-flight requests")
        return self._stop()

    def _replace(self, slot: int, w: _Worker) -> bool:
        rc = w.proc.returncode
        how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"status {rc}"
        quick = rc > 0 and time.monotonic() - w.started < QUICK_EXIT
        self.quick_failures = self.quick_failures + 1 if quick else 0
        if self.quick_failures >= MAX_QUICK_FAILURES:
            self._say(f"Error: worker {slot} exited with {how} {self.quick_failures} times "
                      "right after starting; see its messages above. Stopping.")
            return False
        self._say(f"worker {slot} (pid {w.proc.pid}) exited with {how}; starting another")
        self.counters.add(slot, "restarts")
        self.counters.set(slot, "connections", GONE)  # its connections died with it
        self._start(slot)
        return True

    def _stop(self) -> int:
        """SIGTERM to every worker, wait for each to finish its requests, SIGKILL any that
        outlives the grace period."""
        live = [w for w in self.workers if w is not None and w.proc.poll() is None]
        for w in live:
            w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + float(self.config["grace"]) + 5
        status = 0
        for w in live:
            try:
                w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
                status = 1
            if w.proc.returncode not in (0, -signal.SIGTERM):
                status = 1
        self._say("stopped" if status == 0 else "stopped; a worker did not stop cleanly")
        return status
