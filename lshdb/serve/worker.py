"""One worker process of ``lshdb serve``: opens the index itself, then runs uvicorn.

Started by the supervisor (:mod:`lshdb.serve.workers`) as ``python -m lshdb.serve.worker``
with the listening socket and the counters' file as inherited descriptors and its settings
as JSON on stdin (the token never appears in a command line or an environment). It opens
the index after it starts, never inheriting an LMDB environment (py-lmdb's rule).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Any

__all__ = ["main"]


def _watch_parent(parent: int, server: Any) -> None:
    """Stop gracefully when the supervisor is gone (killed without passing SIGTERM on)."""
    while not server.should_exit:
        if os.getppid() != parent:
            logging.getLogger("lshdb.serve").warning(
                "the supervisor (pid %d) is gone; this worker stops", parent)
            server.should_exit = True
            return
        time.sleep(0.5)


def main() -> None:
    import uvicorn

    from ..index.index import open as open_index
    from .accept import BalancedServer
    from .app import Service, Settings, create_app
    from .counters import Counters

    cfg = json.loads(sys.stdin.read())
    slot = int(cfg["slot"])
    sock = socket.socket(fileno=int(cfg["fd"]))
    counters = Counters(int(cfg["counters_fd"]), int(cfg["workers"]))
    counters.begin(slot)
    index = open_index(cfg["path"], readonly=bool(cfg["readonly"]))
    try:
        # slots a killed predecessor left behind (the supervisor cleared those of earlier runs)
        cleared = index.reader_slots(clear_stale=True)["cleared"]
        if cleared:
            logging.getLogger("lshdb.serve").warning(
                "worker %d: cleared %d stale LMDB reader slot(s) of a dead process", slot,
                cleared)
        settings = Settings(path=cfg["path"], readonly=bool(cfg["readonly"]),
                            token=cfg.get("token"), max_body=int(cfg["max_body"]),
                            max_batch=int(cfg["max_batch"]),
                            write_timeout=float(cfg["write_timeout"]), slot=slot,
                            workers=int(cfg["workers"]))
        app = create_app(Service(index, settings, counters))
        config = uvicorn.Config(app, log_level=cfg.get("log_level", "info"),
                                access_log=bool(cfg.get("access_log")), lifespan="off",
                                timeout_keep_alive=30,
                                timeout_graceful_shutdown=int(cfg["grace"]))
        server = BalancedServer(config, sock, counters, slot)
        threading.Thread(target=_watch_parent, args=(int(cfg["parent"]), server),
                         daemon=True, name="lshdb-watch-parent").start()
        server.run()
    finally:
        index.close()  # after the last request: no writer can be open now


if __name__ == "__main__":
    main()
