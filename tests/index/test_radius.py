"""Radius queries on dense metrics (query(..., threshold=r)), against brute force."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import lshdb
from lshdb.cli.main import cli


def _oracle(metric: str, X: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Exact distances in float64 from q to every row of X."""
    if metric == "cosine":
        Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
        return 1.0 - Xn @ (q / np.linalg.norm(q))
    if metric == "l2":
        return np.sqrt(((X - q) ** 2).sum(1))
    if metric == "l1":
        return np.abs(X - q).sum(1)
    return np.unpackbits(X ^ q, axis=1).sum(1).astype(np.float64)  # hamming, packed bits


def _data(metric: str, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    if metric == "hamming":
        centres = rng.integers(0, 256, (20, 8), dtype=np.uint8)
        X = centres[rng.integers(0, 20, 1500)].copy()
        flips = rng.random((1500, 64)) < 0.06
        X ^= np.packbits(flips, axis=1)
        return X, {"dim": 64}
    centres = rng.normal(size=(20, 16)) * 4
    X = (centres[rng.integers(0, 20, 1500)] + rng.normal(size=(1500, 16))).astype(np.float64)
    return X, {"dim": 16}


@pytest.mark.parametrize("metric", ["cosine", "l2", "l1", "hamming"])
def test_radius_query_returns_every_item_within_the_distance(tmp_path, metric):
    rng = np.random.default_rng(11)
    X, opts = _data(metric, rng)
    keys = [f"k{i}" for i in range(len(X))]
    with lshdb.create(tmp_path / "ix.lshdb", metric=metric, **opts) as index:
        index.add(keys, X)
        index.delete(keys[:50])  # deleted rows stay in the file: never answers
        live = np.arange(50, len(X))
        for qi in (60, 700, 1400):
            q = X[qi]
            d = _oracle(metric, X, q)[live]
            # a radius holding a few dozen items, away from any item's distance
            r = float(np.sort(d)[40])
            if metric != "hamming":
                r = float((np.sort(d)[40] + np.sort(d)[41]) / 2)
            truth = {keys[i] for i in live[d <= r]}
            # brute force through the index: exactly the items within r, nearest first
            got = index.query(q, k=None, threshold=r, scan=True)
            assert {key for key, _ in got} == truth
            dists = [dist for _, dist in got]
            assert dists == sorted(dists) and max(dists) <= r + 1e-6
            by_key = dict(zip(keys, _oracle(metric, X, q)))
            for key, dist in got:
                assert dist == pytest.approx(by_key[key], abs=1e-4)
            # through the buckets: the candidates within r, no more, no fewer
            cand, _ = index.candidates(q)
            with index.reader() as rd:
                cand_keys = {rd.key_of(int(i)) for i in cand}
            got_lsh = index.query(q, k=None, threshold=r, scan=False)
            assert {key for key, _ in got_lsh} == truth & cand_keys
            assert len(truth & cand_keys) > 1  # the buckets find more than the item itself
            # k caps the count: the k nearest of them
            top = index.query(q, k=5, threshold=r, scan=True)
            assert top == got[:5]
            # query_batch agrees
            assert index.query_batch(np.stack([q, q]), k=None, threshold=r,
                                     scan=True) == [got, got]
        # radius 0 from a stored item: that item (and exact copies) only
        got = index.query(X[100], k=None, threshold=0.0, scan=True)
        assert got[0][0] == "k100" and all(abs(dist) <= 1e-6 for _, dist in got)


def test_radius_query_rejects_bad_thresholds_and_options(tmp_path):
    X = np.random.default_rng(1).normal(size=(200, 8))
    with lshdb.create(tmp_path / "ix.lshdb", metric="l2", dim=8) as index:
        index.add(range(200), X)
        for bad in (-0.1, float("nan"), float("inf"), "1", True):
            with pytest.raises(lshdb.InvalidParameterError, match="threshold is a distance"):
                index.query(X[0], threshold=bad)
        with pytest.raises(lshdb.InvalidParameterError, match="rerank applies to k-nearest"):
            index.query(X[0], threshold=1.0, rerank=10)
        with pytest.raises(lshdb.InvalidParameterError, match="k must be an int"):
            index.query(X[0], k=None)  # k=None needs a threshold


def test_cli_query_threshold_on_a_dense_index(tmp_path):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "q.npy", X[:2])
    ix = tmp_path / "ix.lshdb"
    r = CliRunner().invoke(cli, ["build", str(ix), "--input", str(tmp_path / "x.npy"),
                                 "--metric", "l2"])
    assert r.exit_code == 0, r.output
    d = np.sqrt(((X[:, None, :] - X[None, :2, :]) ** 2).sum(-1))  # (400, 2)
    r0 = float(np.sort(d[:, 0])[30] + np.sort(d[:, 0])[31]) / 2
    for extra, cap in (([], None), (["-k", "7"], 7)):
        r = CliRunner().invoke(cli, ["query", str(ix), "--input", str(tmp_path / "q.npy"),
                                     "--threshold", str(r0), "--scan", *extra])
        assert r.exit_code == 0, r.output
        res = [json.loads(line) for line in r.stdout.splitlines()]
        for qi, out in enumerate(res):
            want = np.flatnonzero(d[:, qi] <= r0)
            want = want[np.argsort(d[want, qi], kind="stable")][:cap]
            assert [h["key"] for h in out["results"]] == want.tolist()


def test_radius_scan_verifies_the_rows_it_returns_only(tmp_path):
    """As a k-nearest scan: a damaged row outside the radius does not stop the query; one
    inside it is reported."""
    X = np.zeros((300, 4), dtype=np.float32)
    X[:, 0] = np.arange(300)  # item i at distance |i - j| from item j
    path = tmp_path / "ix.lshdb"
    with lshdb.create(path, metric="l2", dim=4) as index:
        index.add(range(300), X)
    gen = (path / "CURRENT").read_text().strip()
    with open(path / gen / "rows.bin", "r+b") as f:  # flip a bit of row 250
        f.seek(64 + 250 * (4 * 4 + 8))  # the lowest bit of its first value
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x01]))
    with lshdb.open(path, readonly=True) as index:
        got = index.query(X[10], k=None, threshold=3.5, scan=True)
        assert got == [(10, 0.0), (9, 1.0), (11, 1.0), (8, 2.0), (12, 2.0), (7, 3.0),
                       (13, 3.0)]
        with pytest.raises(lshdb.CorruptIndexError, match="row 250 .* fails its checksum"):
            index.query(X[249], k=None, threshold=1.5, scan=True)
