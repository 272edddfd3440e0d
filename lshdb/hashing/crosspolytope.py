"""Cross-polytope LSH for cosine distance (Andoni, Indyk, Laarhoven, Razenshteyn, Schmidt 2015).

One hash function rotates a vector pseudo-randomly and returns the closest of the ``2d'``
signed basis vectors ``+-e_i``: the index of the largest ``|y_i|`` with its sign. It is the
family behind FALCONN and, unlike a random hyperplane (one bit), each function yields
``log2(2d')`` bits whose collision probability decays faster with the angle: asymptotically
the optimal ``rho`` for cosine.

Workflow
--------
1. Choose ``k`` (functions AND-ed per table) and ``L`` (tables). One function on a
   ``d'``-dimensional rotation has ``2d'`` buckets, so ``k`` is small: 1-3 for ``d'`` of
   64-1024. ``last_cp_dim`` shrinks the last function of every table to ``2 * last_cp_dim``
   buckets, for a number of buckets between two powers of ``2d'`` (as FALCONN does).
   :func:`collision_probability` estimates one function's collision probability at a given
   cosine similarity, to put numbers on the S-curve ``1 - (1 - p^k)^L``.
2. ``hash(X)`` gives the ``(n, L)`` uint64 bucket keys of stored rows.
3. ``probe(q, T)`` gives the ``T`` buckets to visit, best first: the ``L`` home buckets,
   then the cross-polytope multi-probe sequence. Tune ``T`` at query time.

Rotation
--------
As in FALCONN, a rotation is not a dense Gaussian matrix but ``H D3 H D2 H D1`` on the input
padded with zeros to ``d'`` = the next power of two >= ``dim``: three rounds of a random
+-1 diagonal then a fast Walsh-Hadamard transform (``O(d' log d')`` per function instead of
``O(d'^2)``). The transform is a reshape butterfly over a whole batch (every row and every
function at once), always in the same order (block widths 1, 2, 4, ...), with plain IEEE
additions and subtractions in float32 - no BLAS, no summation order that could vary - so a
vector hashes to the same bucket on every platform. Rows are first scaled by an exact power of two (so large
inputs cannot overflow); the Hadamard normalisation ``d'^-1.5`` is left out of hashing
(it cannot change an argmax) and applied only where a score needs unit length.

Bucket keys
-----------
Function value: ``i`` for ``+e_i`` and ``i + c`` for ``-e_i`` (``c`` = the function's
cross-polytope dimension: ``d'``, or ``last_cp_dim`` for a table's last function), so a
value lies in ``[0, 2c)`` and takes ``b = ceil(log2(2c))`` bits. When a table's ``k``
values fit in 64 bits they are packed, function 0 in the lowest bits: the key *is* the
tuple, with no collisions. Otherwise the values are packed greedily into 64-bit words in
function order and the key is ``mix64(... mix64(mix64(w0) ^ w1) ... ^ wn)``
(:func:`lshdb.bits.mix64`): a hash of the tuple, unsigned 64-bit arithmetic only.

Multi-probe
-----------
For each function the alternatives to its value are the other signed basis vectors, scored
as in FALCONN by the squared gap ``(max_i |u_i| - s u_j)^2`` in the rotated unit vector
``u`` (``s = +-1`` the candidate's sign; the home vertex scores 0). A perturbation moves any
number of a table's functions, each to one of its alternatives, and costs the sum of their
scores; perturbations of all tables are merged cheapest first. The enumeration is exact
(the order of FALCONN's heap), not limited to a few cheapest actions: each table's ``T``
cheapest tuples come from merging its functions' sorted lists pairwise, keeping only pairs
``(a, b)`` with ``(a + 1)(b + 1) <= T`` (no others can be among the ``T`` cheapest).

Thread safety: a family is immutable after construction; ``hash`` and ``probe`` may be
called from many threads at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..bits import mix64
from ..errors import CorruptIndexError, DimensionMismatchError, InvalidParameterError
from ..storage.codec import decode_array, encode_array
from .families import Family
from .rotation import fwht, pad_scaled, rotate, rotation_dim

__all__ = ["CrossPolytope", "collision_probability", "fwht", "rotation_dim"]

ROUNDS = 3  # rounds of (random signs, Hadamard) per rotation, FALCONN's default
_MAX_DIM = 1 << 20  # d' limit: a (L*k, 3, d') int8 sign array per index
_CELLS = 1 << 18  # float32 cells of a (rows, functions, d') block: bounds temporaries


_pair_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (a, b) with (a + 1)(b + 1) <= n, a-major (cached per n)."""
    got = _pair_cache.get(n)
    if got is None:
        counts = n // np.arange(1, n + 1)
        a = np.repeat(np.arange(n), counts)
        b = np.arange(len(a)) - np.repeat(np.cumsum(counts) - counts, counts)
        if len(_pair_cache) >= 32:
            _pair_cache.clear()
        got = _pair_cache[n] = (a, b)
    return got


class CrossPolytope(Family):
    """Cross-polytope LSH: ``L`` tables of ``k`` pseudo-random-rotation argmax functions.

    Parameters
    ----------
    dim : int
        Input dimension; rotations act on ``d' = rotation_dim(dim)``.
    k : int
        Cross-polytope functions AND-ed per table (each worth ``log2(2d')`` bits).
    L : int
        Tables.
    seed : int
        Seed of the sign draws (``np.random.default_rng(seed)``) when ``signs`` is None.
    signs : ndarray, optional
        The stored ``(L*k, 3, d')`` int8 array of +-1 diagonals, function ``t*k + j`` being
        function ``j`` of table ``t``.
    last_cp_dim : int, optional
        Cross-polytope dimension of each table's last function, 1..d' (default ``d'``):
        only the first ``last_cp_dim`` rotated coordinates compete for it.

    Raises
    ------
    InvalidParameterError
        Out-of-range ``dim``, ``k``, ``L`` or ``last_cp_dim``.
    CorruptIndexError
        ``signs`` of the wrong shape or with values other than +-1.
    """

    name = "crosspolytope"
    metric = "cosine"

    def __init__(self, dim: int, k: int, L: int, seed: int = 0,
                 signs: np.ndarray | None = None, last_cp_dim: int | None = None) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) \
                or not 1 <= dim <= _MAX_DIM:
            raise InvalidParameterError(f"dim must be an int in 1..{_MAX_DIM}; found {dim!r}")
        super().__init__(dim, k, L, seed)
        dp = rotation_dim(dim)
        c = dp if last_cp_dim is None else last_cp_dim
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 1 <= c <= dp:
            raise InvalidParameterError(
                f"last_cp_dim must be an int in 1..{dp} (the rotation dimension); found {c!r}")
        F = self.L * self.k
        if signs is None:
            rng = np.random.default_rng(seed)
            signs = (rng.integers(0, 2, (F, ROUNDS, dp), dtype=np.int8) * 2 - 1).astype(np.int8)
        signs = np.asarray(signs)
        if signs.shape != (F, ROUNDS, dp):
            raise CorruptIndexError(
                f"cross-polytope signs have shape {signs.shape}; expected {(F, ROUNDS, dp)} "
                f"for dim={dim}, k={k}, L={L}")
        if signs.dtype.kind not in "iu" or not np.isin(signs, (-1, 1)).all():
            raise CorruptIndexError("cross-polytope signs must be int8 values -1 and +1")
        self.rotation_dim = dp
        self.last_cp_dim = int(c)
        self.signs = np.ascontiguousarray(signs, dtype=np.int8)
        # (R, d', 1, F) float32: broadcasts against (d', m, 1) columns in rotate
        self._signs32 = np.ascontiguousarray(
            self.signs.astype(np.float32).transpose(1, 2, 0)[:, :, None, :])
        # per function j of a table: cross-polytope dimension, bit width and bit offset
        self.cp_dims = np.full(self.k, dp, dtype=np.int64)
        self.cp_dims[-1] = self.last_cp_dim
        self.bits = np.array([int(2 * c - 1).bit_length() for c in self.cp_dims], dtype=np.int64)
        self._cdim_f = np.tile(self.cp_dims, self.L)  # per function of the flat L*k list
        self._words: list[tuple[np.ndarray, np.ndarray]] = []  # (functions, shifts) per word
        start, used = 0, 0
        for j in range(self.k + 1):
            if j == self.k or used + self.bits[j] > 64:
                idx = np.arange(start, j)
                shifts = np.concatenate([[0], np.cumsum(self.bits[start:j])[:-1]])
                self._words.append((idx, shifts.astype(np.uint64)))
                start, used = j, 0
            if j < self.k:
                used += int(self.bits[j])

    @property
    def key_bits(self) -> int:
        """Bits of information in a table's key (``sum log2(2c_j)``); > 64 means hashed keys."""
        return int(self.bits.sum())

    # -- hashing ---------------------------------------------------------------------
    def _check(self, X: np.ndarray) -> np.ndarray:
        A = np.asarray(X)
        if A.ndim != 2 or A.shape[1] != self.dim:
            raise DimensionMismatchError(
                f"cross-polytope family of dim {self.dim} expected an (n, {self.dim}) array; "
                f"found shape {A.shape}")
        return A

    def _raw(self, X: np.ndarray) -> np.ndarray:
        """Unnormalised rotations of every (scaled, padded) row by every function:
        ``(d', m, F)`` float32 (the transform axis outermost, see :func:`fwht0`)."""
        return rotate(pad_scaled(X, self.rotation_dim)[:, :, None], self._signs32)

    def _decode(self, Y: np.ndarray) -> np.ndarray:
        """``(d', m, F)`` rotated vectors -> ``(m, F)`` values (the closest signed vertex)."""
        A = np.abs(Y)
        if self.last_cp_dim < self.rotation_dim:
            A[self.last_cp_dim :, :, self.k - 1 :: self.k] = -1.0  # outside the last polytope
        idx = A.argmax(axis=0)  # the first of equal maxima, as FALCONN
        neg = np.take_along_axis(Y, idx[None], axis=0)[0] < 0
        return idx + neg * self._cdim_f

    def values(self, X: np.ndarray) -> np.ndarray:
        """Function values of every row: ``(n, L, k)`` int64, value ``j`` in ``[0, 2c_j)``.

        Raises
        ------
        DimensionMismatchError
            If ``X`` is not ``(n, dim)``.
        """
        A = self._check(X)
        F = self.L * self.k
        step = max(1, _CELLS // (F * self.rotation_dim))
        out = np.empty((A.shape[0], F), dtype=np.int64)
        for s in range(0, A.shape[0], step):
            out[s : s + step] = self._decode(self._raw(A[s : s + step]))
        return out.reshape(-1, self.L, self.k)

    def rotate(self, X: np.ndarray) -> np.ndarray:
        """The orthogonal rotations themselves: ``(n, L*k, d')`` float64 (for tests, tuning).

        Row ``x`` padded with zeros to ``d'`` and rotated by every function, normalised so
        that norms and inner products are preserved (in float64, unlike hashing).
        """
        A = self._check(X).astype(np.float64)
        P = np.zeros((self.rotation_dim, A.shape[0], 1))
        P[: self.dim, :, 0] = A.T
        Y = rotate(P, self.signs.astype(np.float64).transpose(1, 2, 0)[:, :, None, :])
        return Y.transpose(1, 2, 0) * self.rotation_dim ** (-ROUNDS / 2)

    def combine(self, values: np.ndarray) -> np.ndarray:
        """``(..., k)`` function values -> uint64 keys (packed bits, or hashed words)."""
        v = np.asarray(values).astype(np.uint64)
        words = [(v[..., idx] << shifts).sum(axis=-1, dtype=np.uint64)
                 for idx, shifts in self._words]
        if len(words) == 1:
            return words[0]
        key = mix64(words[0])
        for w in words[1:]:
            key = mix64(key ^ w)
        return key

    def _hash_block(self, X: np.ndarray) -> np.ndarray:
        return self.combine(self.values(X))

    # -- probing ---------------------------------------------------------------------
    def probe(self, x: np.ndarray, n_probes: int) -> tuple[np.ndarray, np.ndarray]:
        """The buckets to visit for one query, best first: ``(tables, keys)``.

        The first ``L`` entries are the home buckets, equal to ``hash(x[None])[0]``; then
        up to ``n_probes - L`` perturbed buckets in order of total squared gap. Every
        ``(table, key)`` pair is distinct; fewer than ``n_probes`` come back when a table
        runs out of perturbations.

        Raises
        ------
        DimensionMismatchError
            If ``x`` is not a vector of length ``dim``.
        """
        xv = np.asarray(x)
        if xv.ndim != 1:
            raise DimensionMismatchError(
                f"probe takes one vector of length {self.dim}; found shape {xv.shape}")
        P = pad_scaled(self._check(xv[None, :]), self.rotation_dim)  # (d', 1)
        Y = rotate(P[:, :, None], self._signs32)  # (d', 1, F)
        vals = self._decode(Y)[0].reshape(self.L, self.k)
        home = self.combine(vals)
        tables = np.arange(self.L)
        if n_probes <= self.L:
            return tables, home
        tx, pv = self._perturbations(Y[:, 0, :].T, P[:, 0], vals, int(n_probes) - self.L)
        all_t = np.concatenate([tables, tx])
        all_k = np.concatenate([home, self.combine(pv)])
        if len(self._words) > 1:  # hashed keys: drop the (astronomically rare) repeats
            order = np.lexsort((all_k, all_t))
            rep = (np.diff(all_t[order]) == 0) & (np.diff(all_k[order]) == 0)
            if rep.any():
                keep = np.ones(len(all_t), dtype=bool)
                keep[order[1:][rep]] = False
                all_t, all_k = all_t[keep], all_k[keep]
        return all_t, all_k

    def _perturbations(self, Y: np.ndarray, p: np.ndarray, vals: np.ndarray,
                       n_extra: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n_extra`` cheapest perturbed value tuples over all tables, cheapest first.

        ``Y`` is the query's ``(F, d')`` raw rotations, ``p`` its scaled padded vector and
        ``vals`` its ``(L, k)`` home values. Returns the table of each probe and its
        ``(n, k)`` values. Exact, like FALCONN's heap: any number of a table's functions
        may move, each to any of its alternatives.
        """
        want = n_extra + 1  # per table, counting its home tuple
        costs, alt = self._alternatives(Y, p, vals.ravel(), want)  # (F, N) each, sorted
        # single moves are perturbations too: the n_extra-th cheapest of them bounds the
        # cost of every perturbation that can make the cut, which trims every list
        singles = costs[:, 1:].ravel()
        bound = np.partition(singles, n_extra - 1)[n_extra - 1] if n_extra <= len(singles) \
            else np.inf
        N = max(1, int((costs <= bound).sum(axis=1).max()))
        costs = costs[:, :N].reshape(self.L, self.k, N)
        # merge functions one at a time, keeping each table's cheapest partial tuples
        # (sorted); (a, b) can only be among the `want` cheapest of two sorted lists if
        # (a + 1)(b + 1) <= want
        acc, choice = costs[:, 0], np.arange(N)[None, :, None].repeat(self.L, axis=0)
        ia0, ib0 = _pairs(want)
        for j in range(1, self.k):
            ok = (ia0 < acc.shape[1]) & (ib0 < N)
            ia, ib = ia0[ok], ib0[ok]
            total = acc[:, ia] + costs[:, j, ib]  # (L, P)
            m = max(1, min(want, int((total <= bound).sum(axis=1).max())))
            keep = np.argpartition(total, m - 1, axis=1)[:, :m] if m < total.shape[1] \
                else np.broadcast_to(np.arange(total.shape[1]), total.shape)
            keep = np.take_along_axis(
                keep, np.argsort(np.take_along_axis(total, keep, axis=1), axis=1,
                                 kind="stable"), axis=1)
            acc = np.take_along_axis(total, keep, axis=1)
            choice = np.concatenate([np.take_along_axis(choice, ia[keep][:, :, None], axis=1),
                                     ib[keep][:, :, None]], axis=2)
        n = acc.shape[1]
        acc = np.where((choice == 0).all(axis=2), np.inf, acc)  # the home tuple itself
        flat = acc.ravel()
        order = np.argsort(flat, kind="stable")[:n_extra]
        order = order[np.isfinite(flat[order])]
        tables, pos = np.divmod(order, n)
        picked = choice[tables, pos]  # (n, k) positions in each function's list
        fidx = tables[:, None] * self.k + np.arange(self.k)[None, :]
        return tables, alt[fidx, picked]

    def _alternatives(self, Y: np.ndarray, p: np.ndarray, vals: np.ndarray,
                      n: int) -> tuple[np.ndarray, np.ndarray]:
        """Each function's ``n`` cheapest values, home first: ``(F, n)`` costs and values.

        The cost of vertex ``s e_i`` is FALCONN's ``(max_j |u_j| - s u_i)^2`` for the unit
        rotated vector ``u``: 0 at home. Lists shorter than ``n`` are padded with inf.
        """
        dp, F, c = self.rotation_dim, self.L * self.k, self.last_cp_dim
        norm = float(np.linalg.norm(p.astype(np.float64)))
        u = Y.astype(np.float64) * (1.0 / (max(norm, 1e-300) * dp ** (ROUNDS / 2)))
        a = np.abs(u)
        if c < dp:
            a[self.k - 1 :: self.k, c:] = -1.0
        top = a.max(axis=1, keepdims=True)
        S3 = np.empty((F, 2, dp))
        np.subtract(top, u, out=S3[:, 0])  # vertex +e_i
        np.add(top, u, out=S3[:, 1])  # vertex -e_i
        np.square(S3, out=S3)
        if c < dp:
            S3[self.k - 1 :: self.k, :, c:] = np.inf
        neg = vals >= self._cdim_f
        S3[np.arange(F), neg.astype(np.int64), vals - neg * self._cdim_f] = -1.0  # home first
        S = S3.reshape(F, 2 * dp)
        n = min(n, 2 * dp)
        pick = np.argpartition(S, n - 1, axis=1)[:, :n] if n < 2 * dp \
            else np.broadcast_to(np.arange(2 * dp), S.shape)
        pick = np.take_along_axis(pick, np.argsort(np.take_along_axis(S, pick, axis=1),
                                                   axis=1, kind="stable"), axis=1)
        cost = np.take_along_axis(S, pick, axis=1)
        cost[:, 0] = 0.0
        sign, coord = np.divmod(pick, dp)
        return cost, coord + sign * self._cdim_f[:, None]

    # -- persistence -----------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {**super().params(), "last_cp_dim": self.last_cp_dim,
                "signs": encode_array(self.signs)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "rotation_dim": self.rotation_dim,
                "last_cp_dim": self.last_cp_dim, "rounds": ROUNDS, "key_bits": self.key_bits}

    @classmethod
    def from_params(cls, dim: int, p: dict[str, Any]) -> CrossPolytope:
        """Rebuild from :meth:`params`; inconsistent shapes raise :class:`CorruptIndexError`."""
        signs = decode_array(p["signs"], "cross-polytope signs")
        if signs.dtype != np.int8:
            raise CorruptIndexError(f"cross-polytope signs stored as {signs.dtype}; expected int8")
        try:
            return cls(dim, p["k"], p["L"], p["seed"], signs=signs, last_cp_dim=p["last_cp_dim"])
        except InvalidParameterError as exc:
            raise CorruptIndexError(f"stored cross-polytope parameters are invalid: {exc}") from exc



def collision_probability(cos_sim: float | Sequence[float] | np.ndarray, dim: int, samples: int = 20_000,
                          seed: int = 0, rotation: str = "hadamard") -> float | np.ndarray:
    """Monte Carlo estimate of one cross-polytope function's collision probability.

    For each cosine similarity, ``samples`` random pairs ``x, y`` in ``R^dim`` at exactly
    that similarity are hashed by one function each (a fresh rotation per pair) and the
    fraction that collide is returned (standard error ``sqrt(p(1-p)/samples)``). There is no
    simple closed form (Andoni et al. 2015 give ``ln 1/p ~ (1-c)/(1+c) ln d'`` asymptotically).

    Parameters
    ----------
    cos_sim : float or array of floats in [-1, 1]
    dim : int
        Input dimension (the rotation acts on ``rotation_dim(dim)``).
    samples : int
        Pairs per similarity.
    seed : int
        Seed of the pairs and rotations (the same draws serve every similarity).
    rotation : {"hadamard", "haar"}
        ``hadamard``: the three-round pseudo-random rotation this family uses. ``haar``: an
        ideal uniformly random rotation of ``R^d'`` (the analysed family), for comparison.

    Raises
    ------
    InvalidParameterError
        Similarities outside [-1, 1], ``samples < 1``, ``dim < 1`` or an unknown rotation.
    """
    cs = np.asarray(cos_sim, dtype=np.float64)
    if not np.all(np.abs(cs) <= 1.0):
        raise InvalidParameterError(f"cos_sim must lie in [-1, 1]; found {cos_sim!r}")
    if rotation not in ("hadamard", "haar"):
        raise InvalidParameterError(f"rotation must be 'hadamard' or 'haar'; found {rotation!r}")
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise InvalidParameterError(f"samples must be an int >= 1; found {samples!r}")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= dim <= _MAX_DIM:
        raise InvalidParameterError(f"dim must be an int in 1..{_MAX_DIM}; found {dim!r}")
    dp = rotation_dim(dim)
    hits = np.zeros(cs.size)
    rng = np.random.default_rng(seed)
    step = max(1, _CELLS // (2 * dp))
    for s in range(0, samples, step):
        m = min(step, samples - s)
        n = dim if rotation == "hadamard" else dp
        x = rng.standard_normal((m, n))
        z = rng.standard_normal((m, n))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        z -= (z * x).sum(axis=1, keepdims=True) * x
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        signs = None
        if rotation == "hadamard":  # (R, d', 1, m): pair member x pair
            signs = (rng.integers(0, 2, (ROUNDS, dp, 1, m)) * 2 - 1).astype(np.float64)
        for i, c in enumerate(cs.ravel()):
            y = c * x + np.sqrt(max(0.0, 1.0 - c * c)) * z
            pair = np.zeros((dp, 2, m))  # coordinates, pair member, pair
            pair[:n, 0] = x.T
            pair[:n, 1] = y.T
            if signs is not None:
                pair = rotate(pair, signs)  # each pair under its own rotation
            idx = np.abs(pair).argmax(axis=0)
            v = idx + dp * (np.take_along_axis(pair, idx[None], axis=0)[0] < 0)
            hits[i] += np.count_nonzero(v[0] == v[1])
    p = hits / samples
    return float(p[0]) if cs.ndim == 0 else p.reshape(cs.shape)

