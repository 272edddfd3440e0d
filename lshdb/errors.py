"""The exceptions lshdb raises.

Every error derives from :class:`LshdbError`; where a builtin exception matches the
condition the subclass inherits it too, so ``except ValueError`` keeps working. Each
message says what was expected, what was found, and what to do.
"""

from __future__ import annotations

__all__ = [
    "LshdbError",
    "InvalidParameterError",
    "InvalidVectorError",
    "DimensionMismatchError",
    "DuplicateKeyError",
    "KeyExistsError",
    "KeyNotFoundError",
    "InvalidKeyError",
    "NotAnIndexError",
    "IndexExistsError",
    "FormatVersionError",
    "CorruptIndexError",
    "ReadOnlyError",
    "LockTimeoutError",
    "IndexClosedError",
    "InputFormatError",
    "StorageError",
    "TuningError",
    "NotFittedError",
    "ServerError",
]


class LshdbError(Exception):
    """Root of every error raised by lshdb."""


class InvalidParameterError(LshdbError, ValueError):
    """An unknown parameter name, an unknown metric or family, or a value out of range."""


class InvalidVectorError(LshdbError, ValueError):
    """Input vectors of the wrong dtype or shape, with NaN or inf, empty, or zero under cosine.

    An error about one row (or item) of a batch carries its position in ``row``, what names
    it in ``noun`` ("row", "item" or "set") and what is wrong with it in ``problem``;
    otherwise ``row`` is None. A caller that feeds a larger input batch by batch names the
    row in the input with :meth:`in_input`.
    """

    def __init__(self, message: str, *, row: int | None = None, noun: str = "row",
                 problem: str = "") -> None:
        super().__init__(message)
        self.row, self.noun, self.problem = row, noun, problem

    @classmethod
    def at_row(cls, what: str, row: int, problem: str, noun: str = "row") -> InvalidVectorError:
        """The error ``"{what}: {noun} {row} {problem}"`` about one row of a batch."""
        return cls(f"{what}: {noun} {row} {problem}", row=row, noun=noun, problem=problem)

    def renumbered(self, row: int) -> InvalidVectorError:
        """This error about row ``row`` of the caller's batch, of which only some rows were
        checked (itself when it is not about one row)."""
        if self.row is None:
            return self
        old, new = (f"{self.noun} {r} {self.problem}" for r in (self.row, row))
        message = str(self)
        if message.endswith(old):
            message = message[: len(message) - len(old)] + new
        return type(self)(message, row=row, noun=self.noun, problem=self.problem)

    def in_input(self, first: int) -> InvalidVectorError:
        """This error raised for a batch that begins at row ``first`` of a larger input, its
        row counted from the input's first (itself when it is not about one row)."""
        if self.row is None:
            return self
        row = self.row + first
        return type(self)(f"{self.noun} {row} of the input {self.problem}", row=row,
                          noun=self.noun, problem=self.problem)


class DimensionMismatchError(InvalidVectorError):
    """Vectors whose dimension differs from the index's."""


class InvalidKeyError(LshdbError, TypeError):
    """A key that is not a str, int or bytes, or too long to store."""


class DuplicateKeyError(LshdbError, ValueError):
    """The same key appears twice in one batch."""


class _KeyMessage(LshdbError, KeyError):
    # KeyError.__str__ shows the repr of its argument; show the message as written.
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class KeyExistsError(_KeyMessage):
    """``add`` was given a key the index already holds (use ``upsert`` to replace it)."""


class KeyNotFoundError(_KeyMessage):
    """A key the index does not hold."""


class NotAnIndexError(LshdbError, FileNotFoundError):
    """The path is not an lshdb index directory."""


class IndexExistsError(LshdbError, FileExistsError):
    """``create`` was pointed at a path that already holds something."""


class FormatVersionError(LshdbError):
    """The index was written by a format version this lshdb cannot read."""


class CorruptIndexError(LshdbError):
    """Stored data failed a consistency check: a checksum, a size, or an invariant."""


class ReadOnlyError(LshdbError, PermissionError):
    """A write was attempted through an index opened with ``readonly=True``."""


class LockTimeoutError(LshdbError, TimeoutError):
    """Another writer held the index's write lock for longer than ``timeout``."""


class IndexClosedError(LshdbError):
    """The index was used after ``close()``."""


class InputFormatError(LshdbError, ValueError):
    """An input file that cannot be read: unknown format, bad header, a bad line."""


class StorageError(LshdbError, OSError):
    """The storage failed under LMDB: a write or read error of the disk, a full disk or a
    file size limit, too many readers. The transaction it happened in was not committed."""


class TuningError(LshdbError):
    """``tune(apply=True)`` found no setting whose held-out recall confirms the target;
    nothing was stored. ``result`` holds the measurements (what ``tune`` returns)."""

    def __init__(self, message: str, result: dict | None = None) -> None:  # type: ignore[type-arg]
        super().__init__(message)
        self.result = result or {}


class NotFittedError(LshdbError, ValueError):
    """A featuriser whose edges must be learned was used before ``fit``."""


class ServerError(LshdbError):
    """An lshdb server refused a request for a reason of its own: no or a wrong token (401),
    a body or batch over its limits (413), an unknown route (404), an internal error (500).

    ``status`` is the HTTP status and ``type`` the error type the server named.
    """

    def __init__(self, message: str, *, status: int = 0, type: str = "") -> None:
        super().__init__(message)
        self.status, self.type = status, type
