"""The ASGI app: Starlette routes over one open index (one per worker process).

JSON in and out, with the field names of the CLI's JSON lines (``key``, ``distance`` or
``jaccard``, ``added``, ``deleted``, ``items``). Reads run on the event loop: a query is
short CPU work. Writes run on a thread, because they may wait up to ``write_timeout`` for the
index's write lock (held by another worker or a writer process beside the server).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import InputFormatError, InvalidParameterError, LshdbError, ReadOnlyError
from ..index.index import Index
from ..metrics import metric_class
from .counters import Counters
from .schema import openapi
from .wire import decode_key, encode_key, error_body, status_of, to_array

__all__ = ["Settings", "Service", "create_app"]

log = logging.getLogger("lshdb.serve")

# query options passed to Index.query / query_batch, with the JSON types each accepts
_INT, _NUM, _BOOL = (int,), (int, float), (bool,)
QUERY_OPTIONS: dict[str, tuple[type, ...]] = {
    "k": _INT, "probes": _INT, "candidates": _INT, "min_hits": _INT, "rerank": _INT,
    "scan": _BOOL, "threshold": _NUM, "exact": _BOOL}
SINGLE_INPUTS = ("vector", "text", "tokens")
BATCH_INPUTS = ("vectors", "texts", "token_sets")
WRITE_INPUTS = ("vectors", "texts", "token_sets")


@dataclass
class Settings:
    """What a worker serves and its limits (see ``lshdb serve --help``)."""

    path: str
    readonly: bool = False
    token: str | None = None
    max_body: int = 16 << 20
    max_batch: int = 1000
    write_timeout: float = 5.0
    slot: int = 0
    workers: int = 1


class Refused(Exception):
    """A request refused by the server itself (status, type, message)."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message)
        self.status, self.type = status, type_


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(obj, default=_json_default), status, headers,
                    media_type="application/json")


def _json_default(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, bytes):
        return encode_key(v)
    raise TypeError(f"cannot serialise {type(v).__name__}")


class Service:
    """One worker's handlers over its open index and its row of the shared counters."""

    def __init__(self, index: Index, settings: Settings, counters: Counters | None) -> None:
        self.index = index
        self.settings = settings
        self.counters = counters
        self.metric = index.metric.name
        self.score = index.metric.score_field
        self._token = settings.token.encode() if settings.token else None

    # -- plumbing --------------------------------------------------------------------
    def _count(self, field: str, n: int = 1) -> None:
        if self.counters is not None:
            self.counters.add(self.settings.slot, field, n)

    def handler(self, fn: Callable[[Request], Awaitable[Any]], auth: bool = True
                ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler: count it, check the token, turn every error into a JSON error
        response (nothing a request sends can take the worker down)."""

        async def endpoint(request: Request) -> Response:
            self._count("requests")
            try:
                if auth:
                    self._check_token(request)
                result = await fn(request)
                return result if isinstance(result, Response) else _json(result)
            except Refused as exc:
                return self.error(exc.status, exc.type, str(exc))
            except LshdbError as exc:
                status = status_of(exc)
                if status == 500:
                    log.exception("request %s %s failed", request.method, request.url.path)
                return self.error(status, type(exc).__name__, str(exc))
            except Exception as exc:  # a defect: logged, answered, and the worker lives on
                log.exception("request %s %s failed", request.method, request.url.path)
                return self.error(500, "InternalError", f"{type(exc).__name__}: {exc}")

        return endpoint

    def error(self, status: int, type_: str, message: str) -> Response:
        """The JSON error response of ``status``, counted."""
        self._count("errors_5xx" if status >= 500 else "errors_4xx")
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return _json(error_body(type_, message), status, headers)

    def _check_token(self, request: Request) -> None:
        if self._token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        # compared in constant time: the time taken says nothing about the token
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(),
                                                                  self._token):
            raise Refused(401, "Unauthorized",
                          "this server needs a bearer token: send 'Authorization: Bearer "
                          "<token>' (lshdb.connect(url, token=...))")

    async def _body(self, request: Request) -> dict[str, Any]:
        limit = self.settings.max_body
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise Refused(413, "PayloadTooLarge",
                          f"the body holds {int(declared)} bytes; this server takes at most "
                          f"{limit} (--max-body): send fewer vectors per request")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Refused(413, "PayloadTooLarge",
                              f"the body is over {limit} bytes (--max-body): send fewer "
                              "vectors per request")
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # too deep: also bad
            raise InputFormatError(f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InputFormatError(f"the body must be a JSON object; found "
                                   f"{type(body).__name__}")
        return body

    def _batch(self, items: Any, what: str) -> list[Any]:
        if not isinstance(items, list):
            raise InvalidParameterError(f"{what!r} must be a JSON array; found "
                                        f"{type(items).__name__}")
        if len(items) > self.settings.max_batch:
            raise Refused(413, "PayloadTooLarge",
                          f"{what!r} holds {len(items)} items; this server takes at most "
                          f"{self.settings.max_batch} per request (--max-batch)")
        return items

    def _item(self, field: str, value: Any) -> Any:
        """One query or stored item as the index reads it."""
        if field in ("vector", "vectors"):
            return to_array(value, self.metric, field)
        if not metric_class(self.metric).is_set:
            raise InvalidParameterError(f"{field!r} applies to jaccard indexes; this index is "
                                        f"{self.metric}: send 'vector' or 'vectors'")
        if field in ("text", "texts"):
            if not isinstance(value, str):
                raise InvalidParameterError(f"a {field!r} item must be a string")
            return value
        if not isinstance(value, list):
            raise InvalidParameterError(f"a {field!r} item must be a JSON array of tokens")
        return value

    @staticmethod
    def _one_of(body: dict[str, Any], fields: tuple[str, ...]) -> list[str]:
        return [f for f in fields if f in body]

    # -- reads -----------------------------------------------------------------------
    async def healthz(self, request: Request) -> Any:
        with self.index.reader() as r:
            return {"status": "ok", "rows": r.n_rows, "live": len(r),
                    "worker": self.settings.slot}

    async def stats(self, request: Request) -> Any:
        flag = request.query_params.get("buckets", "false").lower()
        if flag not in ("true", "false", "1", "0"):
            raise InvalidParameterError(f"buckets must be true or false; found {flag!r}")
        st = self.index.stats(buckets=flag in ("true", "1"))
        st["server"] = {
            "workers": self.counters.rows() if self.counters is not None else [],
            "reader_slots": self.index.reader_slots(),
            "readonly": self.settings.readonly,
            "max_body": self.settings.max_body,
            "max_batch": self.settings.max_batch,
            "write_timeout": self.settings.write_timeout,
        }
        return st

    async def query(self, request: Request) -> Any:
        body = await self._body(request)
        single, batch = self._one_of(body, SINGLE_INPUTS), self._one_of(body, BATCH_INPUTS)
        if len(single) + len(batch) != 1:
            raise InvalidParameterError(
                "give exactly one of 'vector' or 'vectors' (jaccard: 'text', 'tokens', "
                f"'texts', 'token_sets'); found {single + batch or 'none'}")
        field = (single + batch)[0]
        opts: dict[str, Any] = {}
        for name, value in body.items():
            if name == field:
                continue
            types = QUERY_OPTIONS.get(name)
            if types is None:
                raise InvalidParameterError(
                    f"unknown field {name!r}; a query takes {field!r} and the options "
                    f"{', '.join(QUERY_OPTIONS)}")
            if value is not None and (not isinstance(value, types)
                                      or (bool not in types and isinstance(value, bool))):
                raise InvalidParameterError(
                    f"{name} must be {' or '.join(t.__name__ for t in types)}; found {value!r}")
            opts[name] = value
        if "k" not in opts:
            opts["k"] = 10
        t0 = time.perf_counter_ns()
        if single:
            hits = self.index.query(self._item(field, body[field]), **opts)
            out: Any = [self._hit(k, d) for k, d in hits]
            n = 1
        else:
            items = self._batch(body[field], field)
            Q: Any = (to_array(items, self.metric, field) if field == "vectors" else
                      [self._item("text" if field == "texts" else "tokens", v) for v in items])
            res = self.index.query_batch(Q, **opts)
            out = [[self._hit(k, d) for k, d in hits] for hits in res]
            n = len(items)
        self._count("query_ns", time.perf_counter_ns() - t0)
        self._count("query_requests")
        self._count("queries", n)
        return {"results": out}

    def _hit(self, key: Any, score: float) -> dict[str, Any]:
        return {"key": encode_key(key), self.score: score}

    async def get_item(self, request: Request) -> Any:
        raw = request.path_params["key"]
        kind = request.query_params.get("type", "str")
        if kind == "str":
            key: Any = raw
        elif kind == "int":
            try:
                key = int(raw)
            except ValueError:
                raise InvalidParameterError(f"key {raw!r} is not an integer (type=int)") from None
        elif kind == "bytes":
            try:
                key = base64.urlsafe_b64decode(raw.encode("ascii"))
            except (binascii.Error, ValueError, UnicodeEncodeError):
                raise InvalidParameterError(f"key {raw!r:.60} is not base64url (type=bytes)"
                                            ) from None
        else:
            raise InvalidParameterError(f"unknown key type {kind!r}; type is str (the default), "
                                        "int or bytes (the key in base64)")
        v = self.index.get(key)
        return {"key": encode_key(key), "vector": v.tolist(), "dtype": v.dtype.name}

    # -- writes ----------------------------------------------------------------------
    def _writable(self) -> None:
        if self.settings.readonly:
            raise ReadOnlyError("this server was started with --readonly; write with "
                                "`lshdb add` beside it, or restart it without --readonly")

    async def items(self, request: Request) -> Any:
        self._writable()
        body = await self._body(request)
        if request.method == "DELETE":
            return await self._delete(body)
        unknown = set(body) - {"keys", "upsert", *WRITE_INPUTS}
        if unknown:
            raise InvalidParameterError(f"unknown field(s) {sorted(unknown)}; POST /items takes "
                                        "'keys', 'vectors' (jaccard: 'texts' or 'token_sets') "
                                        "and 'upsert'")
        fields = self._one_of(body, WRITE_INPUTS)
        if len(fields) != 1 or "keys" not in body:
            raise InvalidParameterError("give 'keys' and exactly one of 'vectors', 'texts' or "
                                        "'token_sets'")
        upsert = body.get("upsert", False)
        if not isinstance(upsert, bool):
            raise InvalidParameterError(f"upsert must be true or false; found {upsert!r}")
        field = fields[0]
        keys = [decode_key(k) for k in self._batch(body["keys"], "keys")]
        values = self._batch(body[field], field)
        items: Any = (to_array(values, self.metric, field) if field == "vectors" else
                      [self._item("text" if field == "texts" else "tokens", v) for v in values])

        def write() -> int:
            with self.index.writer(timeout=self.settings.write_timeout) as w:
                (w.upsert if upsert else w.add)(keys, items)
            return len(self.index)

        n_items = await run_in_threadpool(write)
        self._count("write_requests")
        self._count("items_written", len(keys))
        return {"added": len(keys), "items": n_items}

    async def _delete(self, body: dict[str, Any]) -> Any:
        unknown = set(body) - {"keys", "missing_ok"}
        if unknown or "keys" not in body:
            raise InvalidParameterError("DELETE /items takes 'keys' and 'missing_ok'")
        missing_ok = body.get("missing_ok", False)
        if not isinstance(missing_ok, bool):
            raise InvalidParameterError(f"missing_ok must be true or false; found {missing_ok!r}")
        keys = [decode_key(k) for k in self._batch(body["keys"], "keys")]

        def delete() -> tuple[int, int]:
            with self.index.writer(timeout=self.settings.write_timeout) as w:
                n = w.delete(keys, missing_ok=missing_ok)
            return n, len(self.index)

        n, n_items = await run_in_threadpool(delete)
        self._count("write_requests")
        self._count("items_written", n)
        return {"deleted": n, "items": n_items}

    async def schema(self, request: Request) -> Any:
        return openapi(self.metric)


def create_app(service: Service) -> Starlette:
    """The Starlette app of one worker."""
    h = service.handler
    routes = [
        Route("/healthz", h(service.healthz, auth=False), methods=["GET"]),
        Route("/openapi.json", h(service.schema, auth=False), methods=["GET"]),
        Route("/stats", h(service.stats), methods=["GET"]),
        Route("/query", h(service.query), methods=["POST"]),
        Route("/items", h(service.items), methods=["POST", "DELETE"]),
        Route("/items/{key:path}", h(service.get_item), methods=["GET"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        names = {404: "NotFound", 405: "MethodNotAllowed"}
        message = (f"no route {request.method} {request.url.path}; see /openapi.json"
                   if status in names else str(exc))
        return service.error(status, names.get(status, "HTTPError"), message)

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})
