"""LSH bucket features as a model's input layer, measured honestly.

Run under the benchmark lock, one thread::

    export LSHDB_SHARED=/work/shared
    flock /tmp/lshdb-bench.lock python benchmarks/features.py

Parts (all seeded; each prints as it goes and the whole lands in
``benchmarks/results/features.md``):

1. ``transform`` throughput (384-d float32, 64 projections x 7 levels, one core) against
   the projection product alone and against one searchsorted per (level, projection).
2. Agreement of the numpy ids with the PyTorch modules on the real embeddings.
3. Bucket occupancy per level on the 384-d dev embeddings: uniform grid vs quantile edges.
4. The Debian-sections task (58 sections from a description's MiniLM embedding), stratified
   k-fold x seeds, the same MLP after each input layer: raw vector (``Linear``), the
   published cascade (uniform grid), the fixed cascade (quantile edges), raw + fixed
   cascade; in the published setting (inputs reduced to 32 dims by PCA, 32 projections,
   ``emb_dim`` 512) and on the full 384-d vectors.
5. A synthetic manifold (a swiss roll lifted into 256 dims, a checkerboard label on it)
   where memorising the position should pay: ``--only synthetic --lift linear --out
   features_linear_lift`` (raw vector = the 3-D point) or the default cosine lift.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.common import SHARED, median, table, write_result  # noqa: E402
from lshdb.features import BucketFeatures  # noqa: E402
from lshdb.features.torch import CascadeEmbedding, CosineVectorEmbedding  # noqa: E402

BINS = (1, 2, 4, 8, 12, 16, 20)


# -- data ----------------------------------------------------------------------------
def debian() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The 20,500 dev embeddings (float32) and their Debian sections as class numbers."""
    d = np.load(os.path.join(SHARED, "data", "debian_minilm_dev.npz"))
    X = np.concatenate([d["base"], d["queries"]]).astype(np.float32)
    names = [str(s) for s in np.concatenate([d["base_ids"], d["query_ids"]])]
    section = {}
    with open(os.path.join(SHARED, "data", "debian_sections_dev.tsv")) as f:
        next(f)
        for line in f:
            pkg, sec = line.rstrip("\n").split("\t")
            section[pkg] = sec
    labels = [section[n] for n in names]
    classes = sorted(set(labels))
    return X, np.array([classes.index(s) for s in labels]), classes


def swiss_roll(n: int, dim: int, seed: int, lift: str = "cos",
               checker: tuple[int, int] = (16, 8)) -> tuple[np.ndarray, np.ndarray]:
    """A swiss roll lifted into ``dim`` dims, labelled by a checkerboard on its two
    intrinsic coordinates. ``lift="cos"``: random cosine features of the 3-D point (smooth,
    nonlinear); ``"linear"``: a random linear map of (x, y, z, 1), so the raw vector holds
    only the 3-D point and its direction still names it."""
    rng = np.random.default_rng(seed)
    t = 1.5 * np.pi * (1 + 2 * rng.random(n))
    h = 21 * rng.random(n)
    p = np.stack([t * np.cos(t), h, t * np.sin(t)], axis=1)
    if lift == "linear":
        P = np.concatenate([(p - [0, 10.5, 0]) / 10, np.ones((n, 1))], axis=1)
        X = (P @ rng.standard_normal((4, dim))).astype(np.float32)
    else:
        W = rng.standard_normal((3, dim)) / 4.0
        b = rng.uniform(0, 2 * np.pi, dim)
        X = np.cos(p @ W + b).astype(np.float32)
    a = np.floor((t - 1.5 * np.pi) / (3 * np.pi) * checker[0]).astype(int)
    c = np.floor(h / 21 * checker[1]).astype(int)
    return X, (a + c) % 2


def stratified_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number of every row: each class dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=int)
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        fold[rows] = (np.arange(len(rows)) + rng.integers(k)) % k
    return fold


def pca(train: np.ndarray, dims: int) -> Callable[[np.ndarray], np.ndarray]:
    mean = train.mean(axis=0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    basis = vt[:dims].T.astype(np.float32)
    return lambda A: ((A - mean) @ basis).astype(np.float32)


# -- models --------------------------------------------------------------------------
class Net(nn.Module):
    """An input layer (raw ``Linear``, a bucket cascade, or their sum), then the same MLP."""

    def __init__(self, dim: int, emb: int, classes: int, raw: bool,
                 cascade: CascadeEmbedding | None, hidden: int = 256) -> None:
        super().__init__()
        self.raw = nn.Linear(dim, emb) if raw else None
        self.cascade = cascade
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(emb, hidden), nn.ReLU(),
                                  nn.Linear(hidden, classes))

    def input_params(self) -> int:
        parts = [m for m in (self.raw, self.cascade) if m is not None]
        return sum(p.numel() for m in parts for p in m.parameters())

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        h = 0
        if self.raw is not None:
            h = h + self.raw(x)
        if self.cascade is not None:
            h = h + self.cascade.embed_ids(ids)
        return self.head(h)


def train_eval(net: Net, x: torch.Tensor, ids: torch.Tensor, y: torch.Tensor,
               train: np.ndarray, test: np.ndarray, epochs: int, seed: int,
               batch: int = 256, lr: float = 2e-3) -> tuple[np.ndarray, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    tr = torch.from_numpy(train)
    for _ in range(epochs):
        net.train()
        for s in torch.randperm(len(tr), generator=gen).split(batch):
            rows = tr[s]
            loss = nn.functional.cross_entropy(net(x[rows], ids[rows]), y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        pred = [net(x[torch.from_numpy(r)], ids[torch.from_numpy(r)]).argmax(1).numpy()
                for r in (train, test)]
    return pred[0], pred[1]


def macro_f1(y: np.ndarray, p: np.ndarray) -> float:
    f1 = []
    for c in np.unique(y):
        tp = np.sum((p == c) & (y == c))
        prec = tp / max(np.sum(p == c), 1)
        rec = tp / np.sum(y == c)
        f1.append(0.0 if tp == 0 else 2 * prec * rec / (prec + rec))
    return float(np.mean(f1))


def occupancy(f: BucketFeatures, ids_train: np.ndarray, ids_test: np.ndarray
              ) -> dict[str, Any]:
    """Share of each level's buckets the training rows use (mean over projections), and
    how often test rows land in buckets no training row reached."""
    p = f.projections
    out: dict[str, Any] = {}
    for level, nb in enumerate(f.bins):
        block = ids_train[:, level * p : (level + 1) * p]
        used = np.mean([len(np.unique(block[:, j])) for j in range(p)]) / (nb + 1)
        out[f"used {nb}"] = float(used)
    seen = np.zeros(f.n_buckets, dtype=bool)
    seen[ids_train.ravel()] = True
    unseen = ~seen[ids_test]
    out["test ids unseen"] = float(unseen.mean())
    out["test rows with one"] = float(unseen.any(axis=1).mean())
    return out


VARIANTS = ("raw", "uniform cascade", "quantile cascade", "raw + quantile cascade")


def cross_validate(X: np.ndarray, y: np.ndarray, *, name: str, reduce_to: int | None,
                   n_proj: int, emb: int, folds: int, seeds: int, epochs: int,
                   log: Callable[[str], None]) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                        list[dict[str, Any]]]:
    """Every variant on the same splits; per-split results, paired differences, occupancy."""
    n_classes = int(y.max()) + 1
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    occ: dict[str, list[dict[str, Any]]] = {"uniform": [], "quantile": []}
    params: dict[str, int] = {}
    yt = torch.from_numpy(y)
    for seed in range(seeds):
        fold = stratified_folds(y, folds, seed)
        for k in range(folds):
            train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
            A = X if reduce_to is None else pca(X[train], reduce_to)(X)
            dim = A.shape[1]
            feats = {e: BucketFeatures(dim, n_proj, BINS, edges=e, seed=seed).fit(A[train])
                     for e in ("uniform", "quantile")}
            ids = {e: f.transform(A) for e, f in feats.items()}
            for e in feats:
                occ[e].append(occupancy(feats[e], ids[e][train], ids[e][test]))
            x = torch.from_numpy(A)
            for v in VARIANTS:
                torch.manual_seed(1000 * seed + k)
                edges = "uniform" if v.startswith("uniform") else "quantile"
                cascade = (CascadeEmbedding.from_features(feats[edges], emb)
                           if "cascade" in v else None)
                net = Net(dim, emb, n_classes, raw=v.startswith("raw"), cascade=cascade)
                params[v] = net.input_params()
                t0 = time.perf_counter()
                ptr, pte = train_eval(net, x, torch.from_numpy(ids[edges]), yt, train, test,
                                      epochs, seed=1000 * seed + k)
                acc_tr = float(np.mean(ptr == y[train]))
                acc = float(np.mean(pte == y[test]))
                runs[v].append({"acc": acc, "f1": macro_f1(y[test], pte), "train": acc_tr})
                log(f"{name} seed {seed} fold {k} {v}: acc {acc:.3f} train {acc_tr:.3f} "
                    f"({time.perf_counter() - t0:.1f} s)")
    rows, diffs = [], []
    base = np.array([r["acc"] for r in runs["raw"]])
    for v in VARIANTS:
        acc = np.array([r["acc"] for r in runs[v]])
        f1 = np.array([r["f1"] for r in runs[v]])
        tr = np.array([r["train"] for r in runs[v]])
        rows.append({"setting": name, "input layer": v, "input params": params[v],
                     "accuracy": f"{acc.mean():.3f} ± {acc.std(ddof=1):.3f}",
                     "macro-F1": f"{f1.mean():.3f} ± {f1.std(ddof=1):.3f}",
                     "train acc": f"{tr.mean():.3f}", "train-test gap": f"{(tr - acc).mean():.3f}"})
        if v != "raw":
            d = acc - base
            diffs.append({"setting": name, "comparison": f"{v} - raw",
                          "accuracy difference": f"{d.mean():+.3f} ± {d.std(ddof=1):.3f}",
                          "splits where it wins": f"{int((d > 0).sum())} of {len(d)}"})
    occ_rows = []
    for e, lst in occ.items():
        row: dict[str, Any] = {"setting": name, "edges": e}
        for key in lst[0]:
            row[key] = f"{np.mean([o[key] for o in lst]):.3f}"
        occ_rows.append(row)
    return rows, diffs, occ_rows


# -- the mechanical parts ------------------------------------------------------------
def throughput(X: np.ndarray, repeats: int) -> list[dict[str, Any]]:
    A = np.tile(X, (max(1, 100_000 // len(X)), 1))[:100_000].astype(np.float32)
    fq = BucketFeatures(384, 64, BINS).fit(X)
    fu = BucketFeatures(384, 64, BINS, edges="uniform")
    P = fq.projection
    edges = fq.level_edges()

    def naive() -> None:  # one searchsorted per (level, projection) after the product
        z = (A / np.linalg.norm(A, axis=1, keepdims=True)) @ P
        for e in edges:
            for j in range(64):
                np.searchsorted(e[j], z[:, j])

    jobs = {"transform, quantile edges": lambda: fq.transform(A),
            "transform, uniform grid": lambda: fu.transform(A),
            "projection product alone": lambda: A @ P,
            "searchsorted per (level, projection)": naive}
    times: dict[str, list[float]] = {k: [] for k in jobs}
    with threadpool_limits(1):
        for job in jobs.values():  # warm-up
            job()
        for _ in range(repeats):  # interleaved
            for name, job in jobs.items():
                t0 = time.perf_counter()
                job()
                times[name].append(time.perf_counter() - t0)
    ref = median(times["transform, quantile edges"])
    return [{"what": k, "rows": len(A), "median s": median(v),
             "rows/s": len(A) / median(v), "x transform": median(v) / ref}
            for k, v in times.items()]


def agreement(X: np.ndarray) -> list[dict[str, Any]]:
    """numpy ids against the PyTorch modules, every row, every level."""
    rows = []
    for dim, n_proj in ((384, 64), (32, 32)):
        A = X if dim == 384 else pca(X, 32)(X)
        x = torch.from_numpy(A)
        torch.manual_seed(0)
        seeds = [CosineVectorEmbedding(dim, 4, n_proj, nb) for nb in BINS]
        P = seeds[0].projection_mat
        fu = BucketFeatures(dim, n_proj, BINS, edges="uniform", projection=P.numpy())
        ids = fu.transform(A)
        off = fu.offsets()
        bad = 0
        for level, s in enumerate(seeds):
            s.projection_mat.copy_(P)
            got = s.ids(x).numpy() + off[level]
            bad += int((got != ids[:, level * n_proj : (level + 1) * n_proj]).sum())
        rows.append({"dims": dim, "projections": n_proj, "rows": len(A),
                     "edges": "uniform vs CosineVectorEmbedding (the published module)",
                     "ids compared": ids.size, "ids that differ": bad})
        fq = BucketFeatures(dim, n_proj, BINS, seed=1).fit(A[:16000])
        got = CascadeEmbedding.from_features(fq, 4).ids(x).numpy()
        rows.append({"dims": dim, "projections": n_proj, "rows": len(A),
                     "edges": "quantile vs CascadeEmbedding.from_features",
                     "ids compared": got.size, "ids that differ": int((got != fq.transform(A)).sum())})
    return rows


def dev_occupancy(X: np.ndarray) -> list[dict[str, Any]]:
    """Buckets used per level on the 20,000 base rows (fitted on them) and on the 500
    held-out queries, min and mean over 64 projections."""
    base, queries = X[:20000], X[20000:]
    rows = []
    for edges in ("uniform", "quantile"):
        f = BucketFeatures(384, 64, BINS, edges=edges).fit(base)
        for what, A in (("base (fitted)", base), ("queries (held out)", queries)):
            ids = f.transform(A)
            row: dict[str, Any] = {"edges": edges, "rows": what}
            for level, nb in enumerate(BINS):
                used = [len(np.unique(ids[:, level * 64 + j])) / (nb + 1) for j in range(64)]
                row[f"{nb + 1} buckets"] = f"{min(used):.2f} / {np.mean(used):.2f}"
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--synthetic-epochs", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=5, help="throughput repeats")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2 folds, 1 seed, 1 epoch")
    ap.add_argument("--only", choices=("speed", "task", "synthetic"), default=None)
    ap.add_argument("--lift", choices=("cos", "linear"), default="cos",
                    help="how the synthetic swiss roll is lifted into 256 dims")
    ap.add_argument("--checker", default="16,8", help="checkerboard cells along t and h")
    ap.add_argument("--out", default="features", help="results file name (no .md)")
    args = ap.parse_args()
    if args.quick:
        args.folds, args.seeds, args.epochs, args.synthetic_epochs, args.repeats = 2, 1, 1, 1, 1
    torch.set_num_threads(1)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f} s] {msg}", flush=True)

    X, y, classes = debian()
    parts = []
    if args.only in (None, "speed"):
        speed = throughput(X[:20000], args.repeats)
        log("throughput done")
        agree = agreement(X)
        log("agreement done")
        occ = dev_occupancy(X)
        parts += [
            "### transform throughput (one core, 384-d float32, 64 projections x 7 levels)\n",
            table(speed), "",
            "### numpy ids against the PyTorch modules (all 20,500 dev rows, every level)\n",
            table(agree), "",
            "### Buckets used per level on the 384-d dev embeddings "
            "(share of the level's buckets, min / mean over 64 projections)\n",
            table(occ), ""]
    if args.only in (None, "task"):
        keep = np.isin(y, np.flatnonzero(np.bincount(y) >= args.folds))
        Xk, yk = X[keep], np.unique(y[keep], return_inverse=True)[1]
        results, diffs, occ_rows = [], [], []
        for name, reduce_to, n_proj, emb in (("32-d (PCA), 32 proj, emb 512", 32, 32, 512),
                                             ("384-d, 64 proj, emb 256", None, 64, 256)):
            r, d, o = cross_validate(Xk, yk, name=name, reduce_to=reduce_to, n_proj=n_proj,
                                     emb=emb, folds=args.folds, seeds=args.seeds,
                                     epochs=args.epochs, log=log)
            results += r
            diffs += d
            occ_rows += o
        parts += [
            f"### Debian sections: {len(yk):,} packages, {int(yk.max()) + 1} sections "
            f"(those with at least {args.folds} packages), {args.folds}-fold x {args.seeds} "
            f"seeds, {args.epochs} epochs\n",
            "Mean ± standard deviation over the splits; the same MLP (ReLU, Linear(emb, 256), "
            "ReLU, Linear(256, classes)) after each input layer, Adam 2e-3, batch 256.\n",
            table(results), "", "Paired by split (the same train/test rows):\n", table(diffs), "",
            "Bucket occupancy on the training rows (mean over projections and splits) and "
            "test rows in buckets no training row reached:\n", table(occ_rows), ""]
    if args.only in (None, "synthetic"):
        checker = tuple(int(c) for c in args.checker.split(","))
        Xs, ys = swiss_roll(12000, 256, seed=0, lift=args.lift, checker=(checker[0], checker[1]))
        r, d, o = cross_validate(Xs, ys, name=f"swiss roll 256-d ({args.lift} lift), 64 proj, "
                                 "emb 128", reduce_to=None, n_proj=64, emb=128,
                                 folds=args.folds, seeds=1, epochs=args.synthetic_epochs, log=log)
        parts += [
            f"### Synthetic: swiss roll lifted into 256 dims ({args.lift} lift), "
            f"{checker[0]} x {checker[1]} checkerboard label, "
            f"12,000 points, {args.folds}-fold x 1 seed, {args.synthetic_epochs} epochs\n",
            table(r), "", table(d), "", table(o), ""]
    cmd = "python benchmarks/features.py " + " ".join(sys.argv[1:])
    log("done")
    write_result(args.out, "LSH bucket features as a model input layer", "\n".join(parts), cmd)


if __name__ == "__main__":
    main()
