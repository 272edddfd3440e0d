"""Keep OpenBLAS on the calling thread while lshdb works.

OpenBLAS splits a matrix product over its worker threads once the product is big enough (a
writer's batch of 1,000 vectors times the 128 x 192 projection already is), and its workers
then spin for a while after every call, waiting for the next one. lshdb makes many small
products (one per query, one per batch), so the spinning never stops: a process inserting
batches of 1,000 vectors used 75 us of CPU per vector with the default threads and 27 us with
one, in the same wall time, and readers beside it lost that CPU. Splitting these products
gains nothing measurable (10,000-vector batches insert at the same rate either way).

:func:`single_threaded` sets OpenBLAS to one thread for the duration of a read or write block
and restores the previous setting when the last block in the process ends. It finds OpenBLAS
among the libraries loaded in this process (numpy's wheels bundle it under several symbol
names); with another BLAS, or where the library cannot be found, it does nothing. The setting
is process-wide: numpy products run by other threads while an lshdb block is open also run on
one thread.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

# (set, get) pairs: numpy's scipy-openblas wheels, 64-bit-integer builds, plain OpenBLAS.
_SYMBOLS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)

# Work on at least this many rows at once (a bulk load, a compaction, a calibration) gets
# OpenBLAS's usual threads back: it is long enough for them to help and to fall asleep after.
PARALLEL_ROWS = 50_000

_lock = threading.Lock()
_single = 0  # open single_threaded() blocks
_parallel = 0  # open parallel() blocks
_saved = 1  # the thread count before the first block opened
_api: tuple[Any, Any] | None = None
_searched = False


def _loaded_openblas() -> list[str]:
    """Paths of the OpenBLAS libraries mapped into this process (Linux; [] elsewhere)."""
    try:
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    paths = {line.split(maxsplit=5)[-1] for line in lines if "openblas" in line.lower()}
    return sorted(p for p in paths if p.startswith("/"))


def _find() -> tuple[Any, Any] | None:
    import numpy  # noqa: F401  (loads numpy's BLAS before the search)

    for path in _loaded_openblas():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _SYMBOLS:
            setter, getter = getattr(lib, set_name, None), getattr(lib, get_name, None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                return setter, getter
    return None


def threads() -> int | None:
    """OpenBLAS's current thread count, or None when OpenBLAS was not found."""
    api = _get_api()
    return None if api is None else int(api[1]())


def _get_api() -> tuple[Any, Any] | None:
    global _api, _searched
    if not _searched:
        with _lock:
            if not _searched:
                _api = _find()
                _searched = True
    return _api


def _enter(kind: str) -> Any:
    global _single, _parallel, _saved
    api = _get_api()
    if api is None:
        return None
    setter, getter = api
    with _lock:
        if _single == 0 and _parallel == 0:
            _saved = int(getter())
        if kind == "single":
            _single += 1
        else:
            _parallel += 1
        _apply(setter, getter)
    return api


def _exit(api: Any, kind: str) -> None:
    global _single, _parallel
    if api is None:
        return
    with _lock:
        if kind == "single":
            _single -= 1
        else:
            _parallel -= 1
        _apply(*api)


def _apply(setter: Any, getter: Any) -> None:
    """Set the count the open blocks call for: one while only single-threaded blocks are
    open, the saved count otherwise (no block open, or a parallel one)."""
    want = 1 if _single and not _parallel else _saved
    if int(getter()) != want:
        setter(want)


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block with OpenBLAS on one thread; nested and concurrent blocks share it."""
    api = _enter("single")
    try:
        yield
    finally:
        _exit(api, "single")


@contextmanager
def parallel() -> Iterator[None]:
    """Give OpenBLAS its usual threads back for one large piece of work (a bulk load's
    hashing, a calibration), even inside a single-threaded block."""
    api = _enter("parallel")
    try:
        yield
    finally:
        _exit(api, "parallel")


def for_rows(n: int) -> AbstractContextManager[None]:
    """:func:`parallel` for work on at least :data:`PARALLEL_ROWS` rows, else nothing."""
    return parallel() if n >= PARALLEL_ROWS else nullcontext()
