"""What travels over HTTP: keys, vectors and errors as JSON, shared by the app and the client.

Keys are JSON strings and integers as they are; a bytes key travels as ``{"base64": "..."}``
(JSON has no bytes), so every key round-trips to the type it was stored with. Errors travel
as ``{"error": {"type": <the lshdb.errors class name>, "message": ...}}``, and the client
raises the same class again. Needs only the standard library and numpy.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from .. import errors
from ..errors import (
    InvalidKeyError,
    InvalidVectorError,
    KeyExistsError,
    KeyNotFoundError,
    LockTimeoutError,
    LshdbError,
    ReadOnlyError,
    ServerError,
)
from ..metrics import metric_class
from ..storage.codec import Key

__all__ = ["encode_key", "decode_key", "status_of", "error_body", "raise_error", "to_array"]

# the first matching class decides (subclasses before their parents)
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (KeyNotFoundError, 404),
    (KeyExistsError, 409),
    (ReadOnlyError, 403),
    (LockTimeoutError, 503),
    (errors.InvalidParameterError, 400),
    (errors.InvalidVectorError, 400),
    (errors.InvalidKeyError, 400),
    (errors.DuplicateKeyError, 400),
    (errors.InputFormatError, 400),
)


def encode_key(key: Key) -> Any:
    """A key as JSON: str and int as they are, bytes as ``{"base64": ...}``."""
    if isinstance(key, bytes):
        return {"base64": base64.b64encode(key).decode("ascii")}
    return key


def decode_key(obj: Any) -> Key:
    """A key from JSON (:func:`encode_key`'s inverse).

    Raises
    ------
    InvalidKeyError
        Anything but a string, an integer or ``{"base64": ...}``.
    """
    if isinstance(obj, (str, int)) and not isinstance(obj, bool):
        return obj
    if isinstance(obj, dict) and set(obj) == {"base64"} and isinstance(obj["base64"], str):
        try:
            return base64.b64decode(obj["base64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidKeyError(f"key {obj!r:.60} is not valid base64: {exc}") from None
    raise InvalidKeyError(f'keys are JSON strings, integers or {{"base64": "..."}} for bytes; '
                          f"found {type(obj).__name__} {obj!r:.60}")


def status_of(exc: BaseException) -> int:
    """The HTTP status of an error the library raised (500: not the caller's fault)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(type_: str, message: str) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message}}


def raise_error(status: int, body: Any) -> None:
    """Raise the error an error response describes: the lshdb.errors class it names (so
    that code written against an embedded index catches the same exceptions), else
    :class:`ServerError`."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        raise ServerError(f"the server answered {status} without an lshdb error body: "
                          f"{str(body)[:200]}", status=status, type="")
    type_, message = str(err.get("type", "")), str(err.get("message", ""))
    cls = getattr(errors, type_, None) if type_ in errors.__all__ else None
    if isinstance(cls, type) and issubclass(cls, LshdbError) and cls is not ServerError \
            and cls is not LshdbError:
        raise cls(message)
    raise ServerError(message, status=status, type=type_)


def to_array(value: Any, metric: str, what: str) -> np.ndarray:
    """JSON numbers as the array the metric reads: packed bytes (or booleans) for hamming,
    unsigned integers for jaccard signatures, numbers for the dense metrics."""
    if not isinstance(value, list):
        raise InvalidVectorError(f"{what} must be a JSON array of numbers; found "
                                 f"{type(value).__name__}")
    cls = metric_class(metric)
    try:
        if cls.bit_input:
            A = np.asarray(value)
            if A.dtype == np.bool_:
                return A
            if A.dtype.kind not in "iu" or (A.size and (A.min() < 0 or A.max() > 255)):
                raise InvalidVectorError(f"{what} for metric hamming must hold bytes (0-255) "
                                         "or booleans (bits)")
            return A.astype(np.uint8)
        if cls.is_set:
            A = np.asarray(value)
            if A.dtype.kind not in "iu" or (A.size and A.min() < 0):
                raise InvalidVectorError(f"{what}: signatures are non-negative integers")
            return A.astype(np.uint64)
        A = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidVectorError(f"{what} cannot be read as an array of numbers (ragged rows, "
                                 f"or a value that is not a number?): {exc}") from None
    if A.dtype.kind not in "fiu":
        raise InvalidVectorError(f"{what} must hold numbers; found {A.dtype.name} values")
    return A
