"""``lshdb.connect(url)``: an lshdb server used like an open index.

The client has the embedded :class:`lshdb.Index`'s read and write methods with the same
arguments and return types (``query`` gives ``[(key, distance), ...]``, ``get`` a numpy
array, ``delete`` a count) and raises the same :mod:`lshdb.errors` classes, so code moves
between embedded and served use unchanged. Built on the standard library's sockets
(:mod:`lshdb.serve.http1`): it needs no extra. One keep-alive connection per thread; a
client may be shared by threads.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import InvalidKeyError, InvalidParameterError, KeyNotFoundError, ServerError
from ..metrics import metric_class
from ..storage.codec import Key
from .http1 import Connection
from .wire import decode_key, encode_key, raise_error

__all__ = ["connect", "Client"]

# the connection dropped before the whole answer came (a worker killed mid-request, a
# keep-alive connection closed by the server): a read is sent once more on a new one
_DROPPED = ConnectionError  # http1.ProtocolError included
# a connection idle for longer than this is replaced before use: the server closes idle
# keep-alive connections after 30 s, and a write is never sent twice
IDLE_REUSE = 20.0


def connect(url: str, token: str | None = None, timeout: float = 60.0) -> Client:
    """A client of the lshdb server at ``url`` (``http://host:port``, optionally with a path
    prefix behind a reverse proxy), sending ``token`` as a bearer token if given."""
    return Client(url, token=token, timeout=timeout)


class Client:
    """An lshdb server, with the methods of an open :class:`lshdb.Index`."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidParameterError(f"url must be http://host:port or https://...; "
                                        f"found {url!r}")
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = urllib.parse.quote(parts.path.rstrip("/"), safe="/%")
        self._timeout = timeout
        self._headers = b"Content-Type: application/json\r\nAccept: application/json\r\n"
        if token is not None:
            # written into the request as it is: printable ASCII only, or a line break in it
            # would end the header
            if not token or not token.isascii() or not token.isprintable() or " " in token:
                raise InvalidParameterError("token must be printable ASCII without spaces")
            self._headers += f"Authorization: Bearer {token}\r\n".encode("ascii")
        self._local = threading.local()
        self._metric: str | None = None

    # -- transport -------------------------------------------------------------------
    def _conn(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and time.monotonic() - getattr(self._local, "used", 0.0) < IDLE_REUSE:
            return conn  # type: ignore[no-any-return]
        self._drop()
        conn = Connection(self._host, self._port, self._https, self._timeout)
        self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(self, method: str, path: str, body: Any = None, read: bool = True) -> Any:
        """Send one request; the decoded JSON answer, or the error it describes raised.

        A read (``read=True``) whose connection drops before the whole answer came is sent
        once more on a new connection; a write is not (whether it was committed is then
        unknown: the ConnectionError says so, and ``upsert`` can be repeated safely).
        """
        payload = None if body is None else json.dumps(body).encode()
        for attempt in (0, 1):
            conn = self._conn()
            try:
                status, _, raw = conn.request(method, self._prefix + path, payload,
                                              self._headers)
            except _DROPPED as exc:
                self._drop()
                if read and attempt == 0:
                    continue
                if read:
                    raise
                raise ConnectionError(f"{method} {path}: the connection dropped before the "
                                      f"answer came ({type(exc).__name__}: {exc}); the write "
                                      "may or may not have been committed") from exc
            except BaseException:
                self._drop()
                raise
            self._local.used = time.monotonic()  # (an answer with Connection: close closed it)
            try:
                answer = json.loads(raw) if raw else None
            except ValueError:
                raise ServerError(f"{method} {path}: the server answered {status} with "
                                  f"a body that is not JSON: {raw[:200]!r}",
                                  status=status, type="") from None
            if status >= 400:
                raise_error(status, answer)
            return answer
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        self._drop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<lshdb.Client {self.url}>"

    # -- shapes ----------------------------------------------------------------------
    @property
    def metric(self) -> str:
        """The served index's metric (asked once)."""
        if self._metric is None:
            self._metric = str(self.stats(buckets=False)["metric"])
        return self._metric

    def _hits(self, hits: list[dict[str, Any]]) -> list[tuple[Key, float]]:
        score = metric_class(self.metric).score_field
        return [(decode_key(h["key"]), float(h[score])) for h in hits]

    def _one(self, item: Any) -> tuple[str, Any]:
        """The JSON field and value of one query or item: a document, a token set (jaccard,
        as the embedded index reads a list), else a vector (or a jaccard signature array)."""
        if isinstance(item, str):
            return "text", item
        if isinstance(item, np.ndarray) or not metric_class(self.metric).is_set:
            return "vector", np.asarray(item).tolist()
        tokens = list(item)
        if any(isinstance(t, bytes) for t in tokens):
            raise InvalidParameterError("bytes tokens cannot travel as JSON; send str tokens "
                                        "(an index hashes str and bytes tokens differently)")
        return "tokens", tokens

    def _many(self, items: Any) -> tuple[str, Any]:
        if isinstance(items, np.ndarray):
            return "vectors", items.tolist()
        seq = [self._one(x) for x in items]
        fields = {f for f, _ in seq}
        if len(fields) > 1:
            raise InvalidParameterError(f"a batch mixes {sorted(fields)}; send one kind")
        field = fields.pop() if fields else "vector"
        plural = {"text": "texts", "tokens": "token_sets", "vector": "vectors"}[field]
        return plural, [v for _, v in seq]

    # -- reads -----------------------------------------------------------------------
    def query(self, vector: Any, k: int | None = 10, **options: Any) -> list[tuple[Key, float]]:
        """The ``k`` nearest stored items: ``[(key, distance), ...]`` (jaccard: ``(key,
        jaccard)``), best first; options as :meth:`lshdb.Reader.query`."""
        field, value = self._one(vector)
        body = {field: value, "k": k, **options}
        return self._hits(self.request("POST", "/query", body)["results"])

    def query_batch(self, vectors: Any, k: int | None = 10,
                    **options: Any) -> list[list[tuple[Key, float]]]:
        """:meth:`query` for each row of a 2-D array (jaccard: each item of a list)."""
        field, value = self._many(vectors)
        body = {field: value, "k": k, **options}
        return [self._hits(h) for h in self.request("POST", "/query", body)["results"]]

    def get(self, key: Key) -> np.ndarray:
        """A copy of the stored vector of ``key``."""
        if isinstance(key, bytes):
            path, kind = base64.urlsafe_b64encode(key).decode("ascii"), "bytes"
        elif isinstance(key, int) and not isinstance(key, bool):
            path, kind = str(key), "int"
        elif isinstance(key, str):
            path, kind = urllib.parse.quote(key, safe=""), "str"
        else:
            raise InvalidKeyError(f"keys must be str, int or bytes; found "
                                  f"{type(key).__name__} {key!r:.60}")
        answer = self.request("GET", f"/items/{path}?type={kind}")
        return np.asarray(answer["vector"], dtype=answer.get("dtype"))

    def stats(self, buckets: bool = True) -> dict[str, Any]:
        """The index's stats (as :meth:`lshdb.Index.stats`) plus ``"server"``: per-worker
        counters, reader slots and the server's limits."""
        return dict(self.request("GET", f"/stats?buckets={'true' if buckets else 'false'}"))

    def health(self) -> dict[str, Any]:
        """``/healthz``: ``{"status": "ok", "rows", "live", "worker"}``."""
        return dict(self.request("GET", "/healthz"))

    def __len__(self) -> int:
        return int(self.health()["live"])

    def __contains__(self, key: object) -> bool:
        try:
            self.get(key)  # type: ignore[arg-type]
        except KeyNotFoundError:
            return False
        return True

    # -- writes ----------------------------------------------------------------------
    def _write(self, keys: Iterable[Key], vectors: Any, upsert: bool) -> None:
        if isinstance(keys, (str, bytes, int)):
            raise InvalidParameterError("keys must be a sequence of keys (one per vector), "
                                        "not a single key; wrap it in a list")
        ks = keys.tolist() if isinstance(keys, np.ndarray) else list(keys)
        field, value = self._many(vectors)
        self.request("POST", "/items", {"keys": [encode_key(k) for k in ks], field: value,
                                        "upsert": upsert}, read=False)

    def add(self, keys: Iterable[Key], vectors: Any) -> None:
        """Add new items in one transaction on the server (see :meth:`lshdb.Writer.add`)."""
        self._write(keys, vectors, upsert=False)

    def upsert(self, keys: Iterable[Key], vectors: Any) -> None:
        """Add or replace items in one transaction on the server."""
        self._write(keys, vectors, upsert=True)

    def delete(self, keys: Iterable[Key], missing_ok: bool = False) -> int:
        """Delete items in one transaction; returns how many were deleted."""
        if isinstance(keys, (str, bytes, int)):
            raise InvalidParameterError("keys must be a sequence of keys, not a single key; "
                                        "wrap it in a list")
        ks = keys.tolist() if isinstance(keys, np.ndarray) else list(keys)
        answer = self.request("DELETE", "/items", {"keys": [encode_key(k) for k in ks],
                                                   "missing_ok": missing_ok}, read=False)
        return int(answer["deleted"])
