"""Outputs to streams and `-`, inputs from standard input, and the mode of output files.

Real processes with real pipes; a FIFO behind a symlink stands in for /dev/stdout (the real
/dev is never touched).
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from lshdb.cli.main import cli


def _docs(n: int = 40, seed: int = 0) -> list[str]:
    """Random documents; document i+1 is a light edit of document i for every even i."""
    rng = np.random.default_rng(seed)
    docs = [" ".join(rng.choice([f"w{i}" for i in range(3000)], 50)) for _ in range(n)]
    for i in range(0, n, 2):
        words = docs[i].split()
        words[25] = "edited"
        docs[i + 1] = " ".join(words)
    return docs


def _jaccard(a: str, b: str, n: int = 5) -> float:
    def shingles(t: str) -> set[tuple[str, ...]]:
        w = t.lower().split()
        return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}

    A, B = shingles(a), shingles(b)
    return len(A & B) / len(A | B)


def _write_docs(path, docs) -> None:
    with open(path, "w") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": f"d{i}", "text": d}) + "\n")


def _expected(docs: list[str], threshold: float) -> dict[tuple[str, str], float]:
    """Brute force over every pair."""
    out = {}
    for i in range(len(docs)):
        for j in range(i + 1, len(docs)):
            s = _jaccard(docs[i], docs[j])
            if s >= threshold:
                out[(f"d{i}", f"d{j}")] = s
    return out


def _lshdb(*args, cwd, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lshdb", *map(str, args)], cwd=cwd,
                          input=stdin, capture_output=True, timeout=120)


def _pairs(text: str) -> dict[tuple[str, str], float]:
    return {(p["a"], p["b"]): p["jaccard"] for p in map(json.loads, text.splitlines())}


def test_dedup_writes_pairs_to_its_standard_output_pipe(tmp_path):
    docs = _docs()
    _write_docs(tmp_path / "docs.jsonl", docs)
    want = _expected(docs, 0.7)
    assert len(want) == 20
    before = sorted(os.listdir(tmp_path))
    for extra in ([], ["--out", "-"]):
        r = _lshdb("dedup", "docs.jsonl", "--threshold", "0.7", *extra, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        got = _pairs(r.stdout.decode())
        assert got.keys() == want.keys()
        for pair, s in got.items():
            assert s == pytest.approx(want[pair], abs=1e-12)
        assert json.loads(r.stderr)["summary"]["similar_pairs"] == 20
        assert sorted(os.listdir(tmp_path)) == before  # no file named "-", no temporary
    # standard input too
    r = _lshdb("dedup", "-", "--threshold", "0.7", cwd=tmp_path,
               stdin=(tmp_path / "docs.jsonl").read_bytes())
    assert r.returncode == 0, r.stderr
    assert _pairs(r.stdout.decode()).keys() == want.keys()


def test_dedup_writes_into_a_stream_path_and_replaces_nothing(tmp_path):
    """A symlink to a FIFO is what /dev/stdout is to a pipe: written through, never renamed
    over."""
    docs = _docs(20, seed=1)
    _write_docs(tmp_path / "docs.jsonl", docs)
    fifo, link = tmp_path / "fifo", tmp_path / "stdout"
    os.mkfifo(fifo)
    os.symlink(fifo, link)
    before = sorted(os.listdir(tmp_path))
    # opened without waiting for a writer; the output (a few lines) fits the pipe's buffer
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        r = CliRunner().invoke(cli, ["dedup", str(tmp_path / "docs.jsonl"), "--threshold",
                                     "0.7", "--out", str(link)])
        assert r.exit_code == 0, r.output
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == before
    assert os.path.islink(link) and os.readlink(link) == str(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert _pairs(b"".join(chunks).decode()).keys() == _expected(docs, 0.7).keys()


def test_dedup_refuses_two_outputs_on_standard_output(tmp_path):
    _write_docs(tmp_path / "docs.jsonl", _docs(4))
    r = _lshdb("dedup", "docs.jsonl", "--out", "-", "--clusters", "-", cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == b""
    assert r.stderr.decode().endswith("Error: --out and --clusters both name standard output "
                                      "(-); give one of them a file\n")
    assert sorted(os.listdir(tmp_path)) == ["docs.jsonl"]
    r = CliRunner().invoke(cli, ["dedup", "-", "--keep", "first", "--output",
                                 str(tmp_path / "kept.jsonl")], input="")
    assert r.exit_code == 1 and "not standard input or a pipe" in r.output


def test_output_files_follow_the_umask(tmp_path):
    docs = _docs(10)
    _write_docs(tmp_path / "docs.jsonl", docs)
    old = os.umask(0o027)
    try:
        r = CliRunner().invoke(cli, ["dedup", str(tmp_path / "docs.jsonl"), "--out",
                                     str(tmp_path / "pairs.jsonl"), "--clusters",
                                     str(tmp_path / "clusters.jsonl")])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    for name in ("pairs.jsonl", "clusters.jsonl"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o640


def test_build_add_query_delete_read_standard_input(tmp_path):
    X = np.random.default_rng(3).normal(size=(300, 8)).astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, X)
    r = _lshdb("build", "a.lshdb", "--input", "-", "--metric", "l2", cwd=tmp_path,
               stdin=buf.getvalue())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["added"] == 300
    lines = "".join(json.dumps({"key": f"n{i}", "vector": X[i].tolist()}) + "\n"
                    for i in range(3))
    r = _lshdb("add", "a.lshdb", "--input", "-", cwd=tmp_path, stdin=lines.encode())
    assert r.returncode == 0, r.stderr
    r = _lshdb("query", "a.lshdb", "--input", "-", "-k", "2", cwd=tmp_path,
               stdin=lines.encode())
    assert r.returncode == 0, r.stderr
    res = [json.loads(x) for x in r.stdout.splitlines()]
    assert [{h["key"] for h in q["results"]} for q in res] == [{i, f"n{i}"} for i in range(3)]
    r = _lshdb("delete", "a.lshdb", "--keys", "-", cwd=tmp_path, stdin=b"n0\nn1\n5\n")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"deleted": 3, "items": 300}
    r = _lshdb("build", "b.lshdb", "--input", "-", "--metric", "l2", cwd=tmp_path,
               stdin=b"\x01\x02 not a format")
    assert r.returncode == 1
    assert r.stderr.decode().startswith("Error: cannot tell the format of standard input")
    assert not (tmp_path / "b.lshdb").exists()
