"""The tuner's held-out half is drawn at random, and --apply stores only what it confirms."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import lshdb
from lshdb.cli.main import cli
from lshdb.index.tune import held_out_confirms
from lshdb.io.datasets import clustered


def _clustered_then_random(n: int = 1500, dim: int = 128) -> np.ndarray:
    """Clustered rows first, random Gaussian rows after: row order says which is which."""
    X1, _ = clustered(n, dim, seed=11, cluster_size=60, n_queries=1)
    X2 = np.random.default_rng(5).normal(size=(n, dim))
    return np.concatenate([X1, X2]).astype(np.float32)


def _recall_of_stored_settings(index, X: np.ndarray, n: int = 150) -> float:
    """recall@10 of items of the index as queries (self excluded), by brute force."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    picks = np.random.default_rng(99).choice(len(X), n, replace=False)
    total = 0.0
    for i in picks:
        d = 1.0 - Xn @ Xn[i]
        d[i] = np.inf
        truth = set(np.argsort(d, kind="stable")[:10].tolist())
        got = [key for key, _ in index.query(X[i], k=11) if key != i][:10]
        total += len(truth & set(got)) / 10
    return total / n


def test_tuner_holds_out_a_random_half_and_applies_what_it_confirms(tmp_path):
    X = _clustered_then_random()
    path = tmp_path / "t.lshdb"
    with lshdb.create(path, metric="cosine", dim=X.shape[1]) as index:
        index.add(range(len(X)), X)
        before = dict(index.settings)
        try:
            result = index.tune(0.9, k=10, n_queries=60, apply=True)
            applied = True
        except lshdb.TuningError as exc:
            result, applied = exc.result, False
    # both halves mix clustered and random rows: every setting's recall is about the same
    # on each (held out by row order, the clustered rows tuned and the random rows were
    # held out: 0.93 against 0.40 in the report that found it)
    gaps = [abs(f["recall"] - f["held_out_recall"]) for f in result["explored"]]
    assert np.mean(gaps) < 0.1, gaps
    with lshdb.open(path, readonly=True) as index:
        if applied:  # what was stored reaches the target on items the tuner never saw
            assert index.settings["probes"] == result["chosen"]["probes"]
            assert _recall_of_stored_settings(index, X) >= 0.9 - 0.05
        else:
            assert index.settings == before


@pytest.mark.parametrize("per_query, confirmed", [
    ([0.9] * 50, True),
    ([0.85] * 100, False),  # no spread: short by more than the binomial error
    ([1.0, 0.76] * 5, True),  # 0.88 with a wide spread: within one standard error
    ([1.0, 0.6] * 100, False),  # 0.80, spread over many queries: short
    ([], False),
])
def test_held_out_recall_confirms_the_target_within_its_standard_error(per_query, confirmed):
    got, se = held_out_confirms(np.asarray(per_query, dtype=float), 0.9, 10)
    assert got is confirmed
    if per_query:
        spread = np.std(per_query, ddof=1) / np.sqrt(len(per_query))
        assert se == pytest.approx(max(spread, np.sqrt(0.09 / (len(per_query) * 10))))


def test_tune_apply_refuses_and_stores_nothing(tmp_path):
    X = np.random.default_rng(2).normal(size=(3000, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    ix = tmp_path / "ix.lshdb"
    r = CliRunner().invoke(cli, ["build", str(ix), "--input", str(tmp_path / "x.npy"),
                                 "--metric", "cosine", "--codes", "64"])
    assert r.exit_code == 0, r.output
    before = json.loads(CliRunner().invoke(cli, ["stats", str(ix), "--no-buckets"]).stdout)
    r = CliRunner().invoke(cli, ["tune", str(ix), "--apply", "--queries", "20",
                                 "--target-recall", "0.999"])
    assert r.exit_code == 1
    printed = json.loads(r.stdout)  # the measurements are printed before the error
    assert printed["chosen"] is None and printed["frontier"]
    assert r.stderr.startswith("Error: no setting reached recall 0.999 on the tuning "
                               "queries; nothing was stored. Try a lower --target-recall")
    after = json.loads(CliRunner().invoke(cli, ["stats", str(ix), "--no-buckets"]).stdout)
    assert after["settings"] == before["settings"]
