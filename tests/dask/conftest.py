"""The Dask tests' cluster."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def client():
    """A real Dask LocalCluster of two single-threaded worker processes, shared by the Dask
    tests (started once: a cluster takes seconds)."""
    import dask
    from distributed import Client

    from lshdb.dask.client import local_cluster

    # one retry of a task whose worker died, so that a worker killed twice fails the job
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            local_cluster(2) as cluster, Client(cluster) as c:
        yield c
