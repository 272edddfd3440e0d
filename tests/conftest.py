"""Shared fixtures: small seeded data and fresh index paths on tmp_path."""

from __future__ import annotations

import numpy as np
import pytest

from lshdb.datasets import clustered


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    """2,000 clustered 32-d vectors and 50 held-out queries."""
    return clustered(2000, 32, seed=7, cluster_size=50, n_queries=50)


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "ix.lshdb")


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
