"""Connections spread over the workers: each worker accepts from the shared socket only while
no other worker holds fewer open connections.

Keep-alive clients open a few connections and keep them, so whichever worker accepts a
connection serves all its requests. Left to the kernel, an idle worker takes every
connection that arrives while it waits, and two workers end up serving three connections
and one. Each worker publishes its open connections in the shared counters; on a new
connection, a worker that holds more than another live worker leaves it for
:data:`DEFER` seconds, then takes it if nobody did (the other worker may be busy or gone).

The server is uvicorn's, with this acceptor in place of the listening server that uvicorn
would create: accepted sockets get uvicorn's own HTTP protocol, and a graceful stop first
stops accepting, then lets uvicorn finish the open connections.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import uvicorn

from .counters import GONE, Counters

__all__ = ["BalancedServer", "DEFER"]

DEFER = 0.02  # seconds a worker leaves a new connection to a less busy one
log = logging.getLogger("lshdb.serve")


class BalancedServer(uvicorn.Server):
    """uvicorn's server, accepting from ``sock`` by the least-connections rule."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket, counters: Counters,
                 slot: int) -> None:
        super().__init__(config)
        self.sock = sock
        self.counters = counters
        self.slot = slot
        self.open = 0  # connections accepted and not yet closed
        self._deferred: asyncio.TimerHandle | None = None
        self._accepting = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # lifespan and state; no listening server
        self.sock.setblocking(False)
        self._publish()
        self._accepting = True
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._ready)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._stop_accepting()
        await super().shutdown(sockets=sockets)

    def _stop_accepting(self) -> None:
        if self._accepting:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self._accepting = False
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None

    # -- the rule ---------------------------------------------------------------------
    def _publish(self) -> None:
        self.counters.set(self.slot, "connections", self.open)

    def _fewest_elsewhere(self) -> int:
        """The fewest open connections of another live worker (``GONE`` if none)."""
        held = self.counters.column("connections")
        pids = self.counters.column("pid")
        others = [int(c) for s, (c, p) in enumerate(zip(held, pids)) if s != self.slot and p]
        return min(others, default=GONE)

    def _ready(self) -> None:
        """The socket has a connection waiting: take it, or leave it to a less busy worker."""
        if self.open > self._fewest_elsewhere():
            loop = asyncio.get_running_loop()  # (callbacks run on the server's loop)
            loop.remove_reader(self.sock.fileno())
            self._deferred = loop.call_later(DEFER, self._take_leftover)
            return
        self._accept()

    def _take_leftover(self) -> None:
        self._deferred = None
        if not self._accepting:
            return
        self._accept()
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._ready)

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker took it, or the client gave up
        except OSError as exc:  # out of descriptors, say: the connection waits for later
            log.warning("worker %d: cannot accept a connection: %s", self.slot, exc)
            return
        conn.setblocking(False)
        self.open += 1
        self._publish()
        released = False

        def release() -> None:  # once per connection, however it ends
            nonlocal released
            if not released:
                released = True
                self.open -= 1
                self._publish()

        def failed(task: asyncio.Task[Any]) -> None:
            if task.cancelled() or task.exception() is not None:
                conn.close()
                release()

        loop = asyncio.get_running_loop()
        task = loop.create_task(
            loop.connect_accepted_socket(lambda: self._protocol(release), conn))
        task.add_done_callback(failed)

    def _protocol(self, release: Any) -> asyncio.Protocol:
        """uvicorn's HTTP protocol for one connection, counted until it is lost."""
        proto: Any = self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state,
            app_state=self.lifespan.state, _loop=asyncio.get_running_loop())
        lost = proto.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            try:
                lost(exc)
            finally:
                release()

        proto.connection_lost = connection_lost
        return proto  # type: ignore[no-any-return]
