"""A MinHash index states the seed its signatures were made with."""

from __future__ import annotations

import datasketch
import numpy as np

import lshdb


def test_classic_index_reports_the_seed_of_its_signatures(tmp_path):
    tokens = {f"t{i}" for i in range(40)}
    seen = {}
    for name, extra, seed in [("default", {}, 1), ("zero", {"seed": 0}, 0),
                              ("seven", {"seed": 7}, 7)]:
        path = tmp_path / f"{name}.lshdb"
        with lshdb.create(path, metric="jaccard", mode="classic", **extra) as index:
            index.add(["a"], [tokens])
        with lshdb.open(path, readonly=True) as index:
            row = index.get("a")
            assert index.stats()["family"]["seed"] == seed
            assert index.options["seed"] == seed
        # the oracle: datasketch's own signature for that seed
        m = datasketch.MinHash(num_perm=128, seed=seed)
        m.update_batch([t.encode() for t in tokens])
        np.testing.assert_array_equal(row, m.hashvalues)
        seen[name] = row
    assert not np.array_equal(seen["default"], seen["zero"])


def test_oph_index_states_its_default_seed(tmp_path):
    with lshdb.create(tmp_path / "a.lshdb", metric="jaccard") as index:
        index.add(["a"], ["some words to sign here and there"])
        assert index.options["seed"] == 0 and index.stats()["family"]["seed"] == 0
