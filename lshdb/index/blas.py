"""Keep OpenBLAS on the calling thread while lshdb works.

OpenBLAS splits a matrix product over its worker threads once the product is big enough (a
writer's batch of 1,000 vectors times the 128 x 192 projection already is), and its workers
then spin for a while after every call, waiting for the next one. lshdb makes many small
products (one per query, one per batch), so the spinning never stops: a process inserting
batches of 1,000 vectors used 75 us of CPU per vector with the default threads and 26 us with
one, in the same wall time, and readers beside it lost that CPU. Splitting these products
gains nothing measurable (10,000-vector batches insert at the same rate either way).

:func:`single_threaded` sets OpenBLAS to one thread for the duration of one of lshdb's calls
(:func:`one_thread`: a query, a write operation, a compaction) and restores the previous
setting when the last such call in the process returns; between calls, inside an open
``with index.reader()`` or ``writer()`` block, other numpy work keeps its threads. It sets
every OpenBLAS loaded in this process (numpy's wheels bundle one, scipy's another, under
several symbol names), found through ``/proc/self/maps``; where none is found (another BLAS,
another operating system) it does nothing. OpenBLAS has one setting per process (so has
threadpoolctl's limiter, which works the same way): numpy products that other threads run
*during* an lshdb call also run on one thread. A child forked during a call starts with no
call open and the saved thread count.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar, cast

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
# ... and so does one product over at least this many matrix values (an exact scan of the
# stored rows: 20,000 x 384 takes 1.2 ms on one thread, 0.6 ms on two)
PARALLEL_VALUES = PARALLEL_ROWS * 128

_lock = threading.Lock()
_single = 0  # open single_threaded() blocks
_parallel = 0  # open parallel() blocks
_saved: list[int] = []  # each library's thread count before the first block opened
_libs: list[tuple[Any, Any]] = []  # (set, get) of every OpenBLAS found, numpy's first
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


def _find() -> list[tuple[Any, Any]]:
    import numpy  # noqa: F401  (loads numpy's BLAS before the search)

    found = []
    paths = sorted(_loaded_openblas(), key=lambda p: "numpy" not in p)  # numpy's first
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _SYMBOLS:
            setter, getter = getattr(lib, set_name, None), getattr(lib, get_name, None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                found.append((setter, getter))
                break
    return found


def threads() -> int | None:
    """The thread count of numpy's OpenBLAS (the first found), or None without one."""
    libs = _get_libs()
    return int(libs[0][1]()) if libs else None


def _get_libs() -> list[tuple[Any, Any]]:
    global _libs, _searched
    if not _searched:
        with _lock:
            if not _searched:
                _libs = _find()
                _searched = True
    return _libs


def _change(kind: str, step: int) -> None:
    """Open (+1) or close (-1) a block of ``kind``; when that changes what the open blocks
    call for (one thread while only single-threaded blocks are open, the saved counts
    otherwise), set every library."""
    global _single, _parallel, _saved
    libs = _get_libs()
    if not libs:
        return
    with _lock:
        one_before = bool(_single and not _parallel)
        if step > 0 and _single == 0 and _parallel == 0:
            _saved = [int(get()) for _, get in libs]
        # (at 0 already: a block opened before a fork, closed in the child, is ignored)
        if kind == "single":
            _single = max(0, _single + step)
        else:
            _parallel = max(0, _parallel + step)
        one = bool(_single and not _parallel)
        if one != one_before:
            for (set_, _), saved in zip(libs, _saved):
                set_(1 if one else saved)


def enter_single() -> None:
    """Open a single-threaded block (:func:`single_threaded` without ``with``); close it
    with :func:`exit_single`."""
    _change("single", +1)


def exit_single() -> None:
    _change("single", -1)


def _after_fork_in_child() -> None:
    """The blocks open in the parent do not exist in the child: forget them, and give the
    child the thread counts they saved."""
    global _lock, _single, _parallel
    _lock = threading.Lock()
    if (_single or _parallel) and _libs:
        for (set_, _), saved in zip(_libs, _saved):
            set_(saved)
    _single = _parallel = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block with OpenBLAS on one thread; nested and concurrent blocks share it."""
    enter_single()
    try:
        yield
    finally:
        exit_single()


_F = TypeVar("_F", bound=Callable[..., Any])


def one_thread(fn: _F) -> _F:
    """Run each call of ``fn`` in :func:`single_threaded` (a read's query, a write's
    operation): the setting lasts as long as lshdb's own work, not its caller's. A method
    of an object whose ``blas_free`` is true runs as it is (its work calls no BLAS)."""
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if args and getattr(args[0], "blas_free", False):  # e.g. a jaccard index's reader
            return fn(*args, **kwargs)
        enter_single()  # (not the generator context: this wraps every query)
        try:
            return fn(*args, **kwargs)
        finally:
            exit_single()

    return cast(_F, call)


@contextmanager
def parallel() -> Iterator[None]:
    """Give OpenBLAS its usual threads back for one large piece of work (a bulk load's
    hashing, a calibration), even inside a single-threaded block."""
    _change("parallel", +1)
    try:
        yield
    finally:
        _change("parallel", -1)


def for_rows(n: int) -> AbstractContextManager[None]:
    """:func:`parallel` for work on at least :data:`PARALLEL_ROWS` rows, else nothing."""
    return parallel() if n >= PARALLEL_ROWS else nullcontext()


def for_values(n: int) -> AbstractContextManager[None]:
    """:func:`parallel` for a product over at least :data:`PARALLEL_VALUES` matrix values,
    else nothing."""
    return parallel() if n >= PARALLEL_VALUES else nullcontext()
