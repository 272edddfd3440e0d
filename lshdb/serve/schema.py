"""The OpenAPI 3.1 document of the HTTP API, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..metrics import METRIC_NAMES, metric_class

__all__ = ["openapi"]

_KEY = {"description": "A key: a string, an integer, or {\"base64\": ...} for bytes",
        "oneOf": [{"type": "string"}, {"type": "integer"},
                  {"type": "object", "properties": {"base64": {"type": "string"}},
                   "required": ["base64"], "additionalProperties": False}]}
_VECTOR = {"type": "array", "items": {"type": "number"},
           "description": "Numbers (hamming: bytes 0-255 or booleans; jaccard: a signature)"}
_TOKENS = {"type": "array", "items": {"type": ["string", "integer"]}}
_OPTIONS = {
    "k": {"type": ["integer", "null"], "minimum": 1, "default": 10,
          "description": "Neighbours per query (null with a threshold: every item it admits)"},
    "probes": {"type": "integer", "minimum": 1}, "candidates": {"type": "integer", "minimum": 0},
    "min_hits": {"type": "integer", "minimum": 1}, "rerank": {"type": "integer", "minimum": 1},
    "scan": {"type": "boolean"},
    "threshold": {"type": "number", "minimum": 0, "description":
                  "A radius (dense: the largest distance) or the least jaccard similarity"},
    "exact": {"type": "boolean", "description": "jaccard only"},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    what = {400: "Bad input (malformed JSON, wrong dimension, NaN, unknown field or key type)",
            401: "No or a wrong bearer token", 403: "The server is read-only",
            404: "Unknown key (or route)", 409: "A key already exists (add without upsert)",
            413: "Body over --max-body or batch over --max-batch",
            503: "The write lock was not had within --write-timeout"}
    return {str(s): _json(_ref("Error"), what[s]) for s in statuses}


def openapi(metric: str | None = None) -> dict[str, Any]:
    """The document; ``metric`` names the served index's metric in its description."""
    score = metric_class(metric).score_field if metric in METRIC_NAMES else "distance"
    hit = {"type": "object", "required": ["key", score],
           "properties": {"key": _KEY, score: {"type": "number"}}}
    query_props = {"vector": _VECTOR, "vectors": {"type": "array", "items": _VECTOR},
                   "text": {"type": "string"}, "texts": {"type": "array",
                                                         "items": {"type": "string"}},
                   "tokens": _TOKENS, "token_sets": {"type": "array", "items": _TOKENS},
                   **_OPTIONS}
    items_props = {"keys": {"type": "array", "items": _KEY},
                   "vectors": {"type": "array", "items": _VECTOR},
                   "texts": {"type": "array", "items": {"type": "string"}},
                   "token_sets": {"type": "array", "items": _TOKENS},
                   "upsert": {"type": "boolean", "default": False}}
    counts = {"type": "object", "properties": {"added": {"type": "integer"},
                                               "deleted": {"type": "integer"},
                                               "items": {"type": "integer"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "lshdb serve", "version": __version__,
                 "description": f"Nearest-neighbour queries over an lshdb index "
                                f"(metric: {metric or 'any'}). Results are best first."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["type", "message"],
                    "properties": {"type": {"type": "string", "description":
                                            "The lshdb.errors class, or Unauthorized, "
                                            "PayloadTooLarge, NotFound, InternalError"},
                                   "message": {"type": "string"}}}}},
                "Hit": hit,
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {
                "summary": "Liveness; needs no token", "security": [],
                "responses": {"200": _json({"type": "object", "properties": {
                    "status": {"const": "ok"}, "rows": {"type": "integer"},
                    "live": {"type": "integer"}, "worker": {"type": "integer"}}}, "Alive")}}},
            "/stats": {"get": {
                "summary": "The index's stats (as `lshdb stats`) and the server's: per-worker "
                           "counters, reader slots, limits",
                "parameters": [{"name": "buckets", "in": "query", "schema": {
                    "type": "boolean", "default": False},
                    "description": "Also scan every table's buckets (slow on large indexes)"}],
                "responses": {"200": _json({"type": "object"}, "Stats"), **_errors(400, 401)}}},
            "/query": {"post": {
                "summary": "Nearest items of one query (vector, text, tokens) or of a batch "
                           "(vectors, texts, token_sets)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "properties": query_props,
                    "additionalProperties": False}}}},
                "responses": {"200": _json({"type": "object", "properties": {"results": {
                    "oneOf": [{"type": "array", "items": _ref("Hit")},
                              {"type": "array", "items": {"type": "array",
                                                          "items": _ref("Hit")}}]}}},
                    "Results, best first (a list per query for a batch)"),
                    **_errors(400, 401, 413)}}},
            "/items": {
                "post": {"summary": "Add (or with upsert, add or replace) items; one "
                                    "transaction",
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": {"type": "object", "properties": items_props,
                                        "required": ["keys"],
                                        "additionalProperties": False}}}},
                         "responses": {"200": _json(counts, "Counts"),
                                       **_errors(400, 401, 403, 409, 413, 503)}},
                "delete": {"summary": "Delete items; one transaction",
                           "requestBody": {"required": True, "content": {"application/json": {
                               "schema": {"type": "object", "required": ["keys"],
                                          "properties": {"keys": items_props["keys"],
                                                         "missing_ok": {"type": "boolean"}},
                                          "additionalProperties": False}}}},
                           "responses": {"200": _json(counts, "Counts"),
                                         **_errors(400, 401, 403, 404, 413, 503)}}},
            "/items/{key}": {"get": {
                "summary": "The stored vector of a key",
                "parameters": [
                    {"name": "key", "in": "path", "required": True,
                     "schema": {"type": "string"}},
                    {"name": "type", "in": "query", "schema": {
                        "enum": ["str", "int", "bytes"], "default": "str"},
                     "description": "How to read the key (bytes: base64url)"}],
                "responses": {"200": _json({"type": "object", "properties": {
                    "key": _KEY, "vector": _VECTOR, "dtype": {"type": "string"}}},
                    "The stored vector"), **_errors(400, 401, 404)}}},
            "/openapi.json": {"get": {"summary": "This document", "security": [],
                                      "responses": {"200": _json({"type": "object"},
                                                                 "OpenAPI 3.1")}}},
        },
    }
