"""The Dask tests' cluster."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def client():
    """A real Dask LocalCluster of two single-threaded worker processes, shared by the Dask
    tests (started once: a cluster takes seconds)."""
    import dask
    from distributed import Client, LocalCluster

    # one retry of a task whose worker died, so that a worker killed twice fails the job
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                         dashboard_address=None) as cluster, Client(cluster) as c:
        yield c
