"""Shared fixtures: small seeded data and fresh index paths on tmp_path."""

from __future__ import annotations

import numpy as np
import pytest

from lshdb.io.datasets import clustered


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    """2,000 clustered 32-d vectors and 50 held-out queries."""
    return clustered(2000, 32, seed=7, cluster_size=50, n_queries=50)


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "ix.lshdb")
