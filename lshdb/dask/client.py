"""Dask, imported on demand, and a client from a scheduler spec (``local:N`` or an address)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from ..errors import InvalidParameterError, LshdbError

__all__ = ["MissingDependencyError", "require", "local_cluster", "connect"]

_HINT = "install it with: pip install 'lshdb[dask]'"


class MissingDependencyError(LshdbError, ImportError):
    """An optional dependency (here Dask or pyarrow) is not installed."""


def require(what: str = "distributed") -> Any:
    """Import and return ``dask`` (and check ``what``: ``distributed``, ``dataframe`` or
    ``pyarrow``), or raise :class:`MissingDependencyError` naming the extra to install."""
    try:
        import dask

        if what == "distributed":
            import distributed  # noqa: F401
        elif what == "dataframe":
            import dask.dataframe  # noqa: F401
        elif what == "pyarrow":
            import pyarrow  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"this needs Dask ({exc.name} is missing); {_HINT}") from exc
    return dask


def local_cluster(n_workers: int, **options: Any) -> Any:
    """A ``distributed.LocalCluster`` of single-threaded worker processes, started without
    Dask's default ``MALLOC_TRIM_THRESHOLD_=65536``: setting it turns off glibc's adaptive
    mmap threshold, so every large numpy temporary is a fresh mmap and its page faults,
    which made signing 2.2x slower (docs/scale.md)."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                            dashboard_address=None, **options)


@contextlib.contextmanager
def connect(scheduler: str, memory_limit: str | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` for ``local:N`` (a LocalCluster of N single-threaded worker
    processes, closed on exit) or a scheduler address such as ``tcp://host:8786``.

    Raises
    ------
    InvalidParameterError
        A spec that is neither.
    """
    require("distributed")
    from distributed import Client

    m = re.fullmatch(r"local:(\d+)", scheduler.strip())
    if m:
        n = int(m.group(1))
        if not 1 <= n <= 1024:
            raise InvalidParameterError(f"local:N needs 1 <= N <= 1024; found {scheduler!r}")
        kw: dict[str, Any] = {} if memory_limit is None else {"memory_limit": memory_limit}
        with local_cluster(n, **kw) as cluster, Client(cluster) as client:
            yield client
        return
    if "://" not in scheduler and not re.fullmatch(r"[\w.\-]+:\d+", scheduler.strip()):
        raise InvalidParameterError(
            f"--dask takes local:N or a scheduler address (tcp://host:port); found {scheduler!r}")
    with Client(scheduler) as client:
        yield client
