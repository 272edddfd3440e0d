"""A Hypothesis state machine drives a real index and a plain dict side by side.

The model is an insertion-ordered dict ``key -> float32 vector``; an upsert moves its keys
to the end, as it gives them new internal ids. Every query is compared with brute force over
the model. :class:`ExhaustiveMachine` fixes parameters under which LSH is exact (l2, k=1,
L=2, w=1e6, 4 probes: every item lies in one of two adjacent slots per table and the probes
visit both), so its answers must equal brute force. :class:`CalibratingMachine` gives only
the metric and the dimension, so the index scans exactly until it holds 1,000 rows and then
calibrates mid-run; after that only the returned entries must be exact.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import lshdb
from lshdb import check

DIM = 8
CHECK_EVERY = 6  # a deep check every few steps (every step would be slow)

# a small pool, so that adds and upserts collide with stored keys; 1 and "1" differ
KEYS = st.one_of(st.integers(-5, 60), st.text(alphabet="abxyz", max_size=2))
# keys the pool above never holds
MISSING = st.one_of(st.integers(10**6, 10**6 + 50), st.text(alphabet="pq", min_size=3, max_size=4))
SEEDS = st.integers(0, 2**32 - 1)


class Boom(Exception):
    """Raised inside a writer block to abort it."""


def true_distances(model: dict, keys: list, q: np.ndarray) -> np.ndarray:
    X = np.array([model[k] for k in keys], dtype=np.float64).reshape(len(keys), DIM)
    return np.sqrt(((X - q.astype(np.float64)) ** 2).sum(axis=1))


def assert_entries_exact(got: list, model: dict, q: np.ndarray, k: int) -> None:
    """Each returned (key, distance) is a stored key at its true distance, best first."""
    assert len(got) <= min(k, len(model))
    keys = [key for key, _ in got]
    assert len(set(keys)) == len(keys), got
    assert all(key in model for key in keys), (got, list(model))
    dists = np.array([d for _, d in got], dtype=np.float64)
    if got:
        np.testing.assert_allclose(dists, true_distances(model, keys, q), rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(dists) >= 0), got


def assert_brute_force(got: list, model: dict, q: np.ndarray, k: int) -> None:
    """``got`` is exactly the brute-force top ``k`` over the model."""
    assert_entries_exact(got, model, q, k)
    keys = list(model)
    d = true_distances(model, keys, q) if keys else np.empty(0)
    order = np.argsort(d, kind="stable")[:k]
    assert len(got) == len(order)
    np.testing.assert_allclose([dist for _, dist in got], d[order], rtol=1e-5, atol=1e-6)
    # ties are (almost surely) impossible with random float vectors: the keys match too,
    # unless two true distances are closer than float32 can tell apart
    want = [keys[j] for j in order]
    ds = np.sort(d)[: len(order) + 1]
    clear = len(ds) < 2 or np.min(np.diff(ds)) > 1e-5 * max(float(ds[-1]), 1.0)
    if clear:
        assert [key for key, _ in got] == want


class ExhaustiveMachine(RuleBasedStateMachine):
    """Fixed parameters under which queries must equal brute force."""

    CREATE: dict = {"metric": "l2", "k": 1, "L": 2, "w": 1e6, "probes": 4}
    QUERY: dict = {"probes": 4}

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="lshdb-model-")
        self.path = os.path.join(self.tmp, "ix.lshdb")
        self.index = lshdb.create(self.path, dim=DIM, **self.CREATE)
        self.model: dict = {}
        self.serial = 0  # mixed into every random draw: no two vectors are ever equal
        self.steps = 0

    def teardown(self) -> None:
        try:
            if self.index is not None:
                self.index.close()
            report = check(self.path)
            assert report["ok"], report["problems"]
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------
    def vectors(self, seed: int, n: int) -> np.ndarray:
        self.serial += 1
        return np.random.default_rng([seed, self.serial]).standard_normal((n, DIM)).astype(np.float32)

    def assert_query(self, got: list, q: np.ndarray, k: int) -> None:
        assert_brute_force(got, self.model, q, k)

    def assert_unchanged(self, before: list) -> None:
        assert self.index.keys() == before == list(self.model)

    def apply_upsert(self, keys: list, X: np.ndarray) -> None:
        for key, x in zip(keys, X):
            self.model.pop(key, None)
            self.model[key] = x

    # -- writes ------------------------------------------------------------------
    @rule(keys=st.lists(KEYS, min_size=1, max_size=20, unique=True), seed=SEEDS)
    def add(self, keys, seed):
        new = [key for key in keys if key not in self.model]
        if not new:
            return
        X = self.vectors(seed, len(new))
        self.index.add(new, X)
        self.model.update(zip(new, X))

    @precondition(lambda self: self.model)
    @rule(data=st.data(), seed=SEEDS)
    def add_existing_key_fails(self, data, seed):
        old = data.draw(st.sampled_from(list(self.model)), label="existing")
        new = data.draw(st.lists(MISSING, max_size=5, unique=True), label="new")
        keys = data.draw(st.permutations([old, *new]), label="batch")
        before = self.index.keys()
        with pytest.raises(lshdb.KeyExistsError):
            self.index.add(keys, self.vectors(seed, len(keys)))
        self.assert_unchanged(before)

    @rule(data=st.data(), seed=SEEDS)
    def duplicate_key_in_batch_fails(self, data, seed):
        keys = data.draw(st.lists(KEYS, min_size=1, max_size=5, unique=True), label="keys")
        keys = keys + [keys[0]]
        before = self.index.keys()
        with pytest.raises(lshdb.DuplicateKeyError):
            self.index.upsert(keys, self.vectors(seed, len(keys)))
        self.assert_unchanged(before)

    @rule(data=st.data(), seed=SEEDS)
    def upsert(self, data, seed):
        old = (data.draw(st.lists(st.sampled_from(list(self.model)), max_size=8, unique=True),
                         label="existing") if self.model else [])
        new = [key for key in data.draw(st.lists(KEYS, max_size=8, unique=True), label="new")
               if key not in self.model and key not in old]
        keys = data.draw(st.permutations(old + new), label="batch")
        if not keys:
            return
        X = self.vectors(seed, len(keys))
        self.index.upsert(keys, X)
        self.apply_upsert(keys, X)

    @rule(data=st.data())
    def delete(self, data):
        old = (data.draw(st.lists(st.sampled_from(list(self.model)), max_size=8, unique=True),
                         label="existing") if self.model else [])
        missing = [key for key in data.draw(st.lists(MISSING, max_size=3, unique=True),
                                            label="missing") if key not in self.model]
        keys = data.draw(st.permutations(old + missing), label="batch")
        if not keys:
            return
        if missing:
            assert self.index.delete(keys, missing_ok=True) == len(old)
        else:
            assert self.index.delete(keys) == len(old)
        for key in old:
            del self.model[key]

    @rule(data=st.data())
    def delete_missing_fails(self, data):
        old = (data.draw(st.lists(st.sampled_from(list(self.model)), max_size=5, unique=True),
                         label="existing") if self.model else [])
        missing = data.draw(MISSING.filter(lambda k: k not in self.model), label="missing")
        keys = data.draw(st.permutations([*old, missing]), label="batch")
        before = self.index.keys()
        with pytest.raises(lshdb.KeyNotFoundError):
            self.index.delete(keys)
        self.assert_unchanged(before)

    @rule(data=st.data(), seed=SEEDS)
    def transaction(self, data, seed):
        """Add, delete and upsert in one writer block, all committed together."""
        new = [key for key in data.draw(st.lists(KEYS, max_size=6, unique=True), label="add")
               if key not in self.model]
        with self.index.writer() as w:
            if new:
                X = self.vectors(seed, len(new))
                w.add(new, X)
                self.model.update(zip(new, X))
            gone = (data.draw(st.lists(st.sampled_from(list(self.model)), max_size=4,
                                       unique=True), label="delete") if self.model else [])
            if gone:
                assert w.delete(gone) == len(gone)
                for key in gone:
                    del self.model[key]
            up = data.draw(st.lists(KEYS, max_size=6, unique=True), label="upsert")
            if up:
                X = self.vectors(seed, len(up))
                w.upsert(up, X)
                self.apply_upsert(up, X)

    @rule(data=st.data(), seed=SEEDS)
    def aborted_writer_changes_nothing(self, data, seed):
        before = self.index.keys()
        model = dict(self.model)
        new = data.draw(st.lists(MISSING, min_size=1, max_size=6, unique=True), label="add")
        with pytest.raises(Boom):
            with self.index.writer() as w:
                w.add(new, self.vectors(seed, len(new)))
                if model:
                    up = data.draw(st.lists(st.sampled_from(list(model)), max_size=4,
                                            unique=True), label="upsert")
                    if up:
                        w.upsert(up, self.vectors(seed, len(up)))
                    gone = [key for key in data.draw(
                        st.lists(st.sampled_from(list(model)), max_size=4, unique=True),
                        label="delete") if key not in up]
                    if gone:
                        w.delete(gone)
                raise Boom
        self.assert_unchanged(before)
        for key in data.draw(st.lists(st.sampled_from([*model, *new]), max_size=3,
                                      unique=True), label="look"):
            if key in model:
                np.testing.assert_array_equal(self.index.get(key), model[key])
            else:
                assert key not in self.index

    # -- reads -------------------------------------------------------------------
    @rule(seed=SEEDS, k=st.integers(1, 15))
    def query_random(self, seed, k):
        q = self.vectors(seed, 1)[0]
        self.assert_query(self.index.query(q, k=k, **self.QUERY), q, k)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), k=st.integers(1, 5))
    def query_stored_vector(self, data, k):
        key = data.draw(st.sampled_from(list(self.model)), label="key")
        q = self.model[key]
        got = self.index.query(q, k=k, **self.QUERY)
        assert got[0] == (key, 0.0), got
        self.assert_query(got, q, k)

    @rule(seed=SEEDS, n=st.integers(1, 4), k=st.integers(1, 8))
    def query_batch(self, seed, n, k):
        Q = self.vectors(seed, n)
        got = self.index.query_batch(Q, k=k, **self.QUERY)
        assert len(got) == n
        for q, g in zip(Q, got):
            self.assert_query(g, q, k)

    @rule(data=st.data())
    def get(self, data):
        key = data.draw(st.one_of(KEYS, MISSING), label="key")
        if key in self.model:
            got = self.index.get(key)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, self.model[key])
        else:
            with pytest.raises(lshdb.KeyNotFoundError):
                self.index.get(key)

    @rule(key=st.one_of(KEYS, MISSING))
    def contains(self, key):
        assert (key in self.index) == (key in self.model)

    @rule()
    def keys_in_id_order(self):
        assert self.index.keys() == list(self.model)

    # -- life cycle --------------------------------------------------------------
    # an empty index with a fixed family cannot be compacted yet: see
    # test_compact_of_an_empty_index below
    @precondition(lambda self: self.model or self.index.family is None)
    @rule()
    def compact(self):
        report = self.index.compact()
        assert report["live"] == len(self.model)
        assert self.index.keys() == list(self.model)

    @rule()
    def close_and_reopen(self):
        self.index.close()
        self.index = None
        self.index = lshdb.open(self.path)

    @rule(seed=SEEDS)
    def readonly_handle_agrees(self, seed):
        with lshdb.open(self.path, readonly=True) as ro:
            assert len(ro) == len(self.model)
            assert ro.keys() == list(self.model)
            q = self.vectors(seed, 1)[0]
            assert ro.query(q, k=5, **self.QUERY) == self.index.query(q, k=5, **self.QUERY)

    # -- invariants --------------------------------------------------------------
    @invariant()
    def length_agrees(self):
        assert len(self.index) == len(self.model)

    @invariant()
    def deep_check_now_and_then(self):
        self.steps += 1
        if self.steps % CHECK_EVERY == 0:
            report = check(self.path)
            assert report["ok"], report["problems"]


class CalibratingMachine(ExhaustiveMachine):
    """Only metric and dim given: exact scans below 1,000 rows, then calibration."""

    CREATE: dict = {"metric": "l2"}
    QUERY: dict = {}

    @initialize(n=st.integers(900, 995), seed=SEEDS)
    def fill(self, n, seed):
        keys = list(range(1000, 1000 + n))  # outside KEYS
        X = self.vectors(seed, n)
        self.index.add(keys, X)
        self.model.update(zip(keys, X))
        assert self.index.family is None  # not calibrated yet: still exact

    @rule(n=st.integers(100, 400), seed=SEEDS)
    def add_bulk(self, n, seed):
        base = 100_000 + 1000 * self.serial
        keys = list(range(base, base + n))
        X = self.vectors(seed, n)
        self.index.add(keys, X)
        self.model.update(zip(keys, X))

    def assert_query(self, got: list, q: np.ndarray, k: int) -> None:
        if self.index.family is None:  # still scanning every row: exact
            assert_brute_force(got, self.model, q, k)
        else:
            assert_entries_exact(got, self.model, q, k)

    @rule()
    def calibrated_once_enough_rows(self):
        # the family is chosen by the first writer that reaches 1,000 live rows, and kept
        if len(self.model) >= 1000:
            assert self.index.family is not None


_SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow],
             "print_blob": True}

TestExhaustive = ExhaustiveMachine.TestCase
TestExhaustive.settings = settings(max_examples=50, stateful_step_count=30, **_SETTINGS)

TestCalibrating = CalibratingMachine.TestCase
TestCalibrating.settings = settings(max_examples=10, stateful_step_count=20, **_SETTINGS)


def test_compact_of_an_empty_index(path):
    with lshdb.create(path, metric="l2", dim=4, k=1, L=2, w=1e6) as index:
        index.add([1], np.ones((1, 4), np.float32))
        index.delete([1])
        report = index.compact()
        assert report["live"] == 0 and len(index) == 0
        assert index.query(np.ones(4, np.float32)) == []
    assert check(path)["ok"]
