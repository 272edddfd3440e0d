"""The tuner, hash codes and scans, measured on real indexes against brute force."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import lshdb
from lshdb import check
from lshdb.cli.main import cli
from lshdb.hashing.codes import SimHashCoder, hamming, hamming_words, nearest
from lshdb.io.datasets import clustered, exact_knn


@pytest.fixture(scope="module")
def data3():
    return clustered(6000, 32, seed=11, cluster_size=60, n_queries=100)


def recall(index, X, Q, keys=None, **kw):
    truth = exact_knn(X, Q, 10, index.metric.name)
    if keys is not None:
        truth = np.asarray(keys)[truth]
    got = index.query_batch(Q, k=10, **kw)
    return float(np.mean([len({k for k, _ in g} & set(truth[i])) / 10 for i, g in enumerate(got)]))


def test_tuner_meets_target_on_held_out_queries_and_applies(tmp_path, data3):
    X, Q = data3
    path = str(tmp_path / "t.lshdb")
    with lshdb.create(path, metric="cosine", dim=32) as index:
        index.add(range(len(X)), X)
        result = lshdb.tune(index, target_recall=0.9, n_queries=160, apply=True)
        chosen = result["chosen"]
        assert chosen is not None and chosen["recall"] >= 0.9
        assert chosen["held_out_recall"] >= 0.9 - 0.03
        # each point's recall, measured again on other queries against brute force
        for point in result["frontier"]:
            settings = {s: point[s] for s in ("scan", "probes", "min_hits", "candidates")}
            assert recall(index, X, Q, **settings) == pytest.approx(point["recall"], abs=0.07)
        assert index.settings["probes"] == chosen["probes"]
    with lshdb.open(path, readonly=True) as index:  # stored: new handles use it
        assert index.settings["min_hits"] == chosen["min_hits"]
        assert recall(index, X, Q) >= 0.85


def test_tune_cli_prints_the_frontier(tmp_path, data3):
    X, _ = data3
    np.save(tmp_path / "x.npy", X[:3000])
    out = CliRunner().invoke(cli, ["tune", "--input", str(tmp_path / "x.npy"), "--metric", "l2",
                                   "--queries", "60", "--format", "table"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0].startswith("build parameters: {") and "frontier" in lines[1]
    assert lines[2].split()[:3] == ["scan", "probes", "min_hits"]
    assert lines[-1].startswith("chosen: ")
    bad = CliRunner().invoke(cli, ["tune"])
    assert bad.exit_code == 1 and "give an index PATH" in bad.stderr


def test_simhash_hamming_estimates_the_angle():
    rng = np.random.default_rng(0)
    coder = SimHashCoder(16, 1024, seed=3)
    x = rng.standard_normal(16)
    for cos in (0.9, 0.5, 0.0):
        u = rng.standard_normal(16)
        u -= u @ x / (x @ x) * x
        y = cos * x / np.linalg.norm(x) + np.sqrt(1 - cos**2) * u / np.linalg.norm(u)
        h = hamming(coder.encode(y[None]), coder.encode(x[None])[0])[0]
        assert abs(h / 1024 - np.arccos(cos) / np.pi) < 0.05


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_codes_rank_candidates_and_scan(tmp_path, data3, metric):
    X, Q = data3
    path = str(tmp_path / "c.lshdb")
    with lshdb.create(path, metric=metric, dim=32, codes=256) as index:
        index.add(range(len(X)), X)
        assert index.coder is not None and index.coder.bits == 256
        full = recall(index, X, Q, rerank=10**6)  # every candidate re-ranked exactly
        ranked = recall(index, X, Q, rerank=200)
        scanned = recall(index, X, Q, scan=True, rerank=400)
        assert ranked >= full - 0.05 and scanned >= 0.85
        index.delete(range(0, 6000, 2))  # a scan never returns a deleted key
        for q in Q[:20]:
            assert all(k % 2 for k, _ in index.query(q, k=10, scan=True))
        index.compact()
        assert recall(index, X[1::2], Q, keys=range(1, 6000, 2), scan=True, rerank=400) >= 0.8
    report = check(path)
    assert report["ok"], report["problems"]


@pytest.mark.parametrize("words", [1, 3, 8])
def test_word_major_hamming_and_nearest_match_oracles(words):
    rng = np.random.default_rng(words)
    codes = rng.integers(0, 256, (5000, 8 * words), dtype=np.uint8)
    codes[:50] = codes[0]  # ties
    q = codes[0] ^ (rng.random(8 * words) < 0.05).astype(np.uint8)
    oracle = np.unpackbits(codes ^ q, axis=1).sum(axis=1)
    cols = np.ascontiguousarray(codes.view("<u8").T)
    h = hamming_words(cols, q.view("<u8"))
    assert h.dtype == np.uint16 and np.array_equal(h, oracle)
    assert np.array_equal(hamming(codes, q), oracle)
    cases = [h, np.zeros(3000, np.uint16), np.arange(3000, 0, -1).astype(np.uint16),
             rng.integers(0, 3, 40000).astype(np.uint16)]
    for values in cases:
        for R in (0, 1, 7, 100, 999, len(values) - 1, len(values), len(values) + 5):
            want = np.sort(np.argsort(values, kind="stable")[:R])  # lowest positions on ties
            assert np.array_equal(nearest(values, R), want), (len(values), R)


@pytest.mark.parametrize("metric,codes", [("cosine", 64), ("l2", None)],
                         ids=["code-scan", "l2-norms"])
def test_scans_see_each_snapshots_rows_and_no_others(path, metric, codes):
    # the per-process copies (word-major codes; l2's squared norms) grow with snapshots
    rng = np.random.default_rng(3)
    X = rng.standard_normal((600, 16)).astype(np.float32) + 2.0
    rank = {"rerank": 100} if codes else {}  # (without codes every candidate is exact)
    with lshdb.create(path, metric=metric, dim=16, codes=codes) as index:
        index.add(range(500), X[:500])
        with index.reader() as old:
            assert old.query(X[7], k=1, scan=True)[0][0] == 7  # the copy now holds 500 codes
            index.add(range(500, 600), X[500:])
            with index.reader() as new:  # extends the copy to 600 codes
                got = new.query(X[550], k=1, scan=True)
                assert got[0][0] == 550 and got[0][1] < 1e-5
            assert all(key < 500 for key, _ in old.query(X[550], k=20, scan=True,
                                                             **rank))


def test_threads_scan_while_a_writer_commits(path):
    # readers in threads share one word-major copy of the codes while a writer extends
    # the index; rerank=1 re-ranks only the nearest code, so a code copied wrong (or a
    # row of another snapshot) shows up as a wrong answer
    import threading

    rng = np.random.default_rng(9)
    X = rng.standard_normal((4000, 16)).astype(np.float32)
    errors: list[str] = []
    with lshdb.create(path, metric="cosine", dim=16, codes=64) as index:
        index.add(range(1000), X[:1000])
        done = threading.Event()

        def read() -> None:
            r_rng = np.random.default_rng(threading.get_ident() % 2**32)
            while not done.is_set():
                with index.reader() as r:
                    for key in r_rng.integers(0, r.n_rows, 20).tolist():
                        got = r.query(X[key], k=1, scan=True, rerank=1)
                        if got[0][0] != key or got[0][1] > 1e-5:
                            errors.append(f"{key}: {got} with {r.n_rows} rows")

        readers = [threading.Thread(target=read) for _ in range(3)]
        for t in readers:
            t.start()
        for s in range(1000, 4000, 100):
            index.add(range(s, s + 100), X[s : s + 100])
        done.set()
        for t in readers:
            t.join()
        assert index.query(X[3999], k=1, scan=True, rerank=1)[0][0] == 3999
    assert not errors, errors[:5]


def test_a_handle_opened_before_the_first_codes_scans_and_ranks_with_them(path):
    X = np.random.default_rng(4).standard_normal((300, 16)).astype(np.float32)
    lshdb.create(path, metric="cosine", dim=16, codes=64).close()
    with lshdb.open(path) as early, lshdb.open(path) as writer:
        writer.add(range(300), X)
        assert early.coder is None  # this handle has not seen the codes record
        assert early.query(X[42], k=1, scan=True)[0][0] == 42
        assert early.query(X[43], k=1, rerank=10)[0][0] == 43


@pytest.mark.parametrize("metric", ["cosine", "l2", "l1"])
def test_a_scan_without_codes_is_exact_and_verified(tmp_path, metric):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((3000, 24)).astype(np.float32)
    Q = rng.standard_normal((30, 24)).astype(np.float32)
    path = str(tmp_path / "s.lshdb")
    with lshdb.create(path, metric=metric, dim=24, codes=0) as index:  # no codes: exact
        index.add(range(3000), X)
        index.delete(range(0, 3000, 3))
        kept = np.arange(3000)[np.arange(3000) % 3 != 0]
        truth = kept[exact_knn(X[kept], Q, 10, metric)]
        for q, want in zip(Q, truth):
            got = index.query(q, k=10, scan=True)
            assert [key for key, _ in got] == want.tolist()
            rows = index.metric.prepare(X[want])
            np.testing.assert_allclose([d for _, d in got],
                                       index.metric.distances(rows, index.metric.prepare_one(q)),
                                       rtol=1e-5, atol=1e-6)
        batch = index.query_batch(Q, k=10, scan=True)
        assert [[key for key, _ in g] for g in batch] == truth.tolist()
        near = kept[exact_knn(X[kept], Q[1:2], 200, metric)[0]]
        index.delete(near[:150].tolist())  # the scan must look past 150 deleted rows
        assert [key for key, _ in index.query(Q[1], k=10, scan=True)] == near[150:160].tolist()
        target = int(truth[0][0])  # the first query's nearest item
    with open(f"{path}/g000001/rows.bin", "r+b") as f:  # damage its row
        f.seek(64 + target * (24 * 4 + 8) + 5)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x10]))
    with lshdb.open(path, readonly=True) as index:
        with pytest.raises(lshdb.CorruptIndexError, match="checksum"):
            index.query(Q[0], k=10, scan=True)


def test_far_neighbours_make_a_scan_the_default(tmp_path, data3):
    from lshdb.tuning.params import SCAN_SHARE

    rng = np.random.default_rng(12)
    X = rng.standard_normal((3000, 64)).astype(np.float32)  # isotropic: neighbours are far
    Q = rng.standard_normal((20, 64)).astype(np.float32)
    with lshdb.create(str(tmp_path / "far"), metric="cosine", dim=64) as index:
        index.add(range(3000), X)
        cal = index.stats(buckets=False)["calibration"]
        assert cal["candidate_share"] >= SCAN_SHARE and cal["scan"] is True
        assert cal["path"] in ("scan", "codes") and index.settings["scan"] is True
        assert recall(index, X, Q) >= 0.9
        assert len(index.query(Q[0], k=10, scan=False)) == 10  # the buckets still answer
    with lshdb.create(str(tmp_path / "exact"), metric="cosine", dim=64, codes=0) as index:
        index.add(range(3000), X)  # no codes allowed: the exact scan
        assert index.stats(buckets=False)["calibration"]["path"] == "scan"
        assert recall(index, X, Q) == 1.0
    for name, kw in (("own", {"scan": False}), ("codes", {"codes": 128})):
        with lshdb.create(str(tmp_path / name), metric="cosine", dim=64, **kw) as index:
            index.add(range(3000), X)
            assert not index.settings["scan"], name  # the caller's choice; code scans are
    X3, _ = data3  # tuned, not defaulted
    with lshdb.create(str(tmp_path / "near"), metric="cosine", dim=32) as index:
        index.add(range(len(X3)), X3)
        cal = index.stats(buckets=False)["calibration"]
        assert cal["candidate_share"] < SCAN_SHARE
        name = f"codes{cal['codes']}" if cal["path"] == "codes" else cal["path"]
        reach = [p["us"] for p in cal["paths"].values() if p["recall"] >= 0.93]
        assert cal["paths"][name]["us"] == min(reach)  # the cheapest path that reaches it
    with lshdb.create(str(tmp_path / "grows"), metric="cosine", dim=32) as index:
        index.add(range(1500), rng.standard_normal((1500, 32)).astype(np.float32))
        assert index.settings["scan"] is True  # calibrated on far neighbours ...
        index.add(range(1500, 1500 + len(X3)), X3)
        index.delete(range(1500))
        index.compact(retune=True)  # ... and re-decided on the rows it holds now
        cal = index.stats(buckets=False)["calibration"]
        assert cal["candidate_share"] < SCAN_SHARE and cal["live_rows"] == len(X3)


def test_scan_cases(path, data):
    X, Q = data
    with lshdb.create(path, metric="cosine", dim=32) as index:
        index.add(range(100), X[:100])
        scanned, probed = index.query(Q[0], k=5, scan=True), index.query(Q[0], k=5)
        assert [k for k, _ in scanned] == [k for k, _ in probed]  # uncalibrated: all exact
        np.testing.assert_allclose([d for _, d in scanned], [d for _, d in probed], rtol=1e-6)
    np.save(path + ".q.npy", Q[:3])
    out = CliRunner().invoke(cli, ["query", path, "--input", path + ".q.npy", "-k", "5",
                                   "--scan"])
    assert out.exit_code == 0, out.output
    truth = exact_knn(X[:100], Q[:3], 5, "cosine")  # a scan without codes is exact
    assert [[h["key"] for h in json.loads(line)["results"]] for line in
            out.stdout.splitlines()] == truth.tolist()
    with lshdb.create(path + "j", metric="jaccard", threshold=0.5) as index:
        index.add(["a"], [["x", "y", "z"]])
        with pytest.raises(lshdb.InvalidParameterError, match="jaccard"):
            index.query(["x", "y"], scan=True)
    with pytest.raises(lshdb.InvalidParameterError, match="multiple of 64"):
        lshdb.create(path + "2", metric="cosine", dim=32, codes=100)
    with pytest.raises(lshdb.InvalidParameterError, match="cosine or l2"):
        lshdb.create(path + "3", metric="l1", dim=32, codes=128)


def test_json_tune_output(tmp_path, data3):
    X, Q = data3
    path = str(tmp_path / "j.lshdb")
    with lshdb.create(path, metric="cosine", dim=32, codes=128) as index:
        index.add(range(3000), X[:3000])
    out = CliRunner().invoke(cli, ["tune", path, "--queries", "40"])
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    assert res["build"]["family"] == "hyperplane" and res["queries"] == 40
    chosen = res["chosen"]
    assert chosen is not None and chosen["recall"] >= 0.9
    with lshdb.open(path, readonly=True) as index:  # what it reports, against brute force
        settings = {s: chosen[s] for s in ("scan", "probes", "min_hits", "candidates",
                                           "rerank")}
        assert recall(index, X[:3000], Q, **settings) >= 0.85


def test_codes_only_index_ranks_by_hamming(tmp_path, data3):
    X, Q = data3
    path = str(tmp_path / "m.lshdb")
    with lshdb.create(path, metric="cosine", dim=32, store="codes", codes=512) as index:
        index.add(range(len(X)), X)
        assert index.family.describe()["family"] == "bitsample"
        assert index.get(0).dtype == np.uint8 and index.get(0).shape == (64,)
        hits = index.query(X[5], k=3)
        assert hits[0] == (5, 0.0)  # its own code: Hamming 0, estimated distance 0
        # distances are the cosine estimate of the Hamming distance between codes
        coder = index.metric.coder
        q = Q[0] / np.linalg.norm(Q[0])
        for key, dist in index.query(Q[0], k=5):
            h = hamming(coder.encode(q[None].astype(np.float32)),
                        coder.encode((X[key] / np.linalg.norm(X[key]))[None]))[0]
            assert dist == pytest.approx(1 - np.cos(np.pi * h / 512), abs=1e-6)
        # a scan ranks every code: the oracle is the Hamming distance to all of them
        codes = coder.encode((X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32))
        for q in Q[:10]:
            q = (q / np.linalg.norm(q)).astype(np.float32)
            h = np.sort(hamming(codes, coder.encode(q[None])[0]))[:10]
            got = [d for _, d in index.query(q, k=10, scan=True)]
            np.testing.assert_allclose(got, 1 - np.cos(np.pi * h / 512), atol=1e-6)
        # probing buckets finds nearly what the scan of every code finds
        assert recall(index, X, Q, probes=64) >= recall(index, X, Q, scan=True) - 0.1
        assert index.query(X[5], k=3, scan=True)[0] == (5, 0.0)
        index.delete([5])
        index.compact()
    assert check(path)["ok"]
    with pytest.raises(lshdb.InvalidParameterError, match="metric cosine only"):
        lshdb.create(path + "2", metric="l2", dim=32, store="codes")


def test_stats_shows_the_s_curve_and_bucket_sizes(tmp_path, data3):
    X, _ = data3
    path = str(tmp_path / "s.lshdb")
    with lshdb.create(path, metric="cosine", dim=32, k=6, L=4) as index:
        index.add(range(2000), X[:2000])
    out = CliRunner().invoke(cli, ["stats", path, "--format", "table"])
    assert out.exit_code == 0, out.output
    text = out.stdout
    assert "S-curve: probability of becoming a candidate by cosine similarity" in text
    assert "1.00 | ########################################" in text
    assert "bucket sizes (ids per bucket: buckets, all tables)" in text
    st = json.loads(CliRunner().invoke(cli, ["stats", path]).stdout)
    curve = st["s_curve"]
    assert curve["p_candidate"][-1] == 1.0 and curve["p_candidate"] == sorted(curve["p_candidate"])
    assert sum(h["buckets"] for h in st["bucket_histogram"]) == sum(t["buckets"] for t in st["tables"])
    png = tmp_path / "s.png"
    assert CliRunner().invoke(cli, ["stats", path, "--plot", str(png)]).exit_code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("k,L", [(4, 3), (8, 2), (14, 2), (60, 2)])
def test_hyperplane_probes_are_the_cheapest_flip_sets_in_order(k: int, L: int) -> None:
    # oracle: every set of 1-3 flips among each table's 10 smallest-margin bits, costed by
    # its summed squared margins (Lv et al.); k=60 takes the general path (keys past 2**52)
    from itertools import combinations

    from lshdb.hashing.families import Hyperplane

    f = Hyperplane(24, k, L, seed=5)
    rng = np.random.default_rng(k)
    for _ in range(3):
        x = rng.standard_normal(24)
        margins = f._margins(x) ** 2
        home = f.hash(x[None])[0]
        oracle = []
        for t in range(L):
            cheap = np.argsort(margins[t], kind="stable")[:10].tolist()
            for r in (1, 2, 3):
                for c in combinations(cheap, r):
                    mask = sum(1 << b for b in c)
                    oracle.append((float(margins[t, list(c)].sum()), t, int(home[t]) ^ mask))
        oracle.sort()
        n = min(len(oracle), 200)
        tables, keys = f.probe(x, L + n)
        np.testing.assert_array_equal(keys[:L], home)
        got = list(zip(tables[L:].tolist(), keys[L:].tolist()))
        assert got == [(t, key) for _, t, key in oracle[:n]]


def _distance_matrix(metric: str, X: np.ndarray, q: np.ndarray) -> np.ndarray:
    A, B = X[q].astype(np.float64), X.astype(np.float64)
    if metric == "cosine":
        d = 1.0 - A @ B.T
    elif metric == "l2":
        d = np.sqrt(np.maximum((A**2).sum(1)[:, None] + (B**2).sum(1)[None] - 2 * A @ B.T, 0))
    elif metric == "l1":
        d = np.abs(A[:, None, :] - B[None]).sum(-1)
    else:  # hamming over packed bits
        d = np.unpackbits(X[q][:, None, :] ^ X[None], axis=-1).sum(-1).astype(np.float64)
    d[np.arange(len(q)), q] = np.inf  # self excluded
    return d


@pytest.mark.parametrize("metric", ["cosine", "l2", "l1", "hamming"])
def test_calibration_neighbours_are_the_k_nearest(metric: str) -> None:
    from lshdb.metrics import get_metric
    from lshdb.tuning.calibration import exact_neighbours

    rng = np.random.default_rng(3)
    if metric == "hamming":  # 16-bit codes: many ties at the 10th distance
        m = get_metric("hamming", 16)
        X = m.prepare(rng.integers(0, 256, (2000, 2), dtype=np.uint8))
    else:
        m = get_metric(metric, 12)
        X = m.prepare(rng.standard_normal((2000, 12)).astype(np.float32))
    q = np.sort(rng.choice(len(X), 70, replace=False))
    got = exact_neighbours(m, X, q, 10)
    d = _distance_matrix(metric, X, q)
    kth = np.sort(d, axis=1)[:, 9]
    got_d = np.take_along_axis(d, got, 1)
    assert (got != q[:, None]).all()
    assert all(len(set(r)) == 10 for r in got.tolist())
    tol = 0.0 if metric == "hamming" else 1e-5  # the index ranks in float32
    assert (got_d <= kth[:, None] + tol).all()
    assert (np.diff(got_d, axis=1) >= -tol).all()  # nearest first


def test_calibration_shortcuts_equal_the_direct_computation() -> None:
    # a smaller k's sample keys come from the base family's work (bit fields; p-stable
    # slots projected once per width), and the sorted columns are a stable argsort:
    # calibration relies on both being exact
    from lshdb.hashing.families import BitSample, Hyperplane, PStable, Unary
    from lshdb.tuning.calibration import _sample_keys, _sub, column_order

    rng = np.random.default_rng(4)
    X = rng.standard_normal((3000, 24)).astype(np.float32)
    codes = rng.integers(0, 256, (3000, 8), dtype=np.uint8)
    small = rng.integers(0, 5, (3000, 6)).astype(np.float32)
    for base, data, widths in [
            (Hyperplane(24, 20, 6, seed=1), X, [None]), (BitSample(64, 20, 6, seed=1), codes, [None]),
            (Unary(6, 20, 6, 4, seed=1), small, [None]),
            (PStable(24, 12, 5, 1.0, seed=1), X, [0.7, 2.5]),
            (PStable(24, 12, 5, 1.0, seed=1, distribution="cauchy"), X, [3.0])]:
        cache: dict = {}
        for w in widths:
            for k in (base.k, 9, 4, 1):
                fam = _sub(base, k, w)
                np.testing.assert_array_equal(_sample_keys(base, fam, data, cache), fam.hash(data))
        HS = _sample_keys(base, _sub(base, 9, widths[0]), data, cache)
        for keys in (HS, HS & np.uint64(0xFFF), rng.integers(0, 2**64, (3000, 3), dtype=np.uint64)):
            np.testing.assert_array_equal(column_order(keys),
                                          np.argsort(keys, axis=0, kind="stable"))
