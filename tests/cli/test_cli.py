"""The command line, through click's CliRunner, asserting exact output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import lshdb
from lshdb.cli.main import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, (result.output, result.stderr if result.stderr_bytes else "")
    return result


def lines(result):
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def write_fvecs(path, X):
    X = np.asarray(X, dtype="<f4")
    rec = np.empty((len(X), X.shape[1] + 1), dtype="<f4")
    rec[:, 0] = np.array([X.shape[1]], dtype="<i4").view("<f4")[0]
    rec[:, 1:] = X
    rec.tofile(path)


@pytest.fixture
def built(tmp_path, data):
    X, Q = data
    np.save(tmp_path / "base.npy", X)
    np.save(tmp_path / "queries.npy", Q[:3])
    ix = tmp_path / "ix.lshdb"
    run("build", ix, "--input", tmp_path / "base.npy", "--metric", "l2",
        "--bits", 4, "--tables", 4, "--width", 8.0)
    return ix, X, Q


def test_version_and_help_everywhere():
    assert run("--version").stdout == f"lshdb, version {lshdb.__version__}\n"
    reference = open(os.path.join(ROOT, "docs", "cli.md")).read()
    for name in cli.commands:
        out = run(name, "-h").stdout
        assert out.startswith(f"Usage: cli {name}") and "--help" in out
        assert f"### lshdb {name}\n" in reference, f"command {name} is not in docs/cli.md"


def test_python_dash_m_runs_the_command_line():
    out = subprocess.run([sys.executable, "-m", "lshdb", "--version"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0 and out.stdout == f"lshdb, version {lshdb.__version__}\n"


def test_build_then_query_prints_one_json_line_per_query(built, tmp_path):
    ix, X, Q = built
    res = lines(run("query", ix, "--input", tmp_path / "queries.npy", "-k", 3, "--probes", 40))
    assert [r["query"] for r in res] == [0, 1, 2]
    with lshdb.open(str(ix)) as index:
        for r, q in zip(res, Q[:3]):
            expect = index.query(q, k=3, probes=40)
            assert [h["key"] for h in r["results"]] == [key for key, _ in expect]
            # JSON carries the 7 significant digits a float32 distance holds
            assert [h["distance"] for h in r["results"]] == pytest.approx(
                [d for _, d in expect], rel=1e-6)


def test_query_table_format(built, tmp_path):
    ix, X, Q = built
    out = run("query", ix, "--input", tmp_path / "queries.npy", "-k", 2, "--format", "table").stdout
    head, *rows = out.splitlines()
    assert head.split() == ["query", "rank", "key", "distance"]
    assert len(rows) == 6 and rows[0].split()[:2] == ["0", "1"]


def test_add_with_keys_file_get_and_delete(built, tmp_path, data):
    ix, X, _ = built
    np.save(tmp_path / "more.npy", X[:3] + 100)
    (tmp_path / "keys.txt").write_text("alpha\n42000\n007\n")
    res = lines(run("add", ix, "--input", tmp_path / "more.npy", "--keys", tmp_path / "keys.txt"))
    assert res[0]["added"] == 3 and res[0]["items"] == len(X) + 3
    got = json.loads(run("get", ix, "alpha").stdout)
    np.testing.assert_allclose(got["vector"], X[0] + 100, rtol=1e-6)
    assert json.loads(run("get", ix, "42000", "--int-key").stdout)["key"] == 42000
    assert json.loads(run("get", ix, "007").stdout)["key"] == "007"  # not an int: leading zero
    (tmp_path / "del.txt").write_text("alpha\n5\n")
    assert lines(run("delete", ix, "--keys", tmp_path / "del.txt"))[0] == {
        "deleted": 2, "items": len(X) + 1}
    bad = run("delete", ix, "--keys", tmp_path / "del.txt", ok=False)
    assert bad.exit_code == 1 and bad.stderr.startswith("Error: 2 of 2 keys are not in the index")
    assert lines(run("delete", ix, "--keys", tmp_path / "del.txt", "--missing-ok"))[0]["deleted"] == 0


def test_nice_lowers_the_writing_process_priority(built, tmp_path, data):
    # in a child process: --nice changes the priority of the process that runs the command
    ix, X, _ = built
    np.save(tmp_path / "more.npy", X[:3] + 100)
    (tmp_path / "keys.txt").write_text("a\nb\nc\n")
    code = ("import os, sys; from lshdb.cli.main import cli; "
            "cli.main(sys.argv[1:], standalone_mode=False); print('nice', sorted("
            "{os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir('/proc/self/task')}))")
    out = subprocess.run([sys.executable, "-c", code, "add", str(ix), "--input",
                          str(tmp_path / "more.npy"), "--keys", str(tmp_path / "keys.txt"),
                          "--nice", "7"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout.splitlines()
    assert json.loads(out[0])["added"] == 3
    assert out[-1] == f"nice {[min(os.nice(0) + 7, 19)]}"  # every thread, OpenBLAS's too
    bad = run("compact", ix, "--nice", "20", ok=False)
    assert bad.exit_code == 1
    assert "Invalid value for '--nice': 20 is not in the range 0<=x<=19." in bad.stderr


def test_fvecs_and_jsonl_inputs(tmp_path, data):
    X, _ = data
    write_fvecs(tmp_path / "b.fvecs", X[:50])
    res = lines(run("build", tmp_path / "a", "--input", tmp_path / "b.fvecs", "--metric", "cosine"))
    assert res[0]["added"] == 50 and res[0]["dim"] == 32
    with open(tmp_path / "v.jsonl", "w") as f:
        for i in range(5):
            f.write(json.dumps({"id": f"k{i}", "emb": X[i].tolist()}) + "\n")
    res = lines(run("build", tmp_path / "b", "--input", tmp_path / "v.jsonl", "--metric", "l2",
                    "--key-field", "id", "--vector-field", "emb"))
    assert res[0]["added"] == 5
    with lshdb.open(str(tmp_path / "b")) as index:
        assert index.keys() == [f"k{i}" for i in range(5)]


def test_a_byte_order_mark_opening_a_jsonl_file_is_dropped(tmp_path, data):
    X, _ = data
    lines_ = [json.dumps({"key": f"k{i}", "vector": X[i].tolist()}) for i in range(3)]
    (tmp_path / "v.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n".join(lines_).encode())
    run("build", tmp_path / "b", "--input", tmp_path / "v.jsonl", "--metric", "l2")
    with lshdb.open(str(tmp_path / "b")) as index:
        assert index.keys() == ["k0", "k1", "k2"]
    docs = [json.dumps({"id": i, "text": f"doc number {i} with some words"}) for i in range(3)]
    (tmp_path / "d.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n".join(docs).encode())
    from lshdb.io.jsonl import read_jsonl_docs
    assert read_jsonl_docs(tmp_path / "d.jsonl")[0] == [0, 1, 2]


def test_bad_jsonl_line_is_reported_with_its_number(tmp_path):
    (tmp_path / "v.jsonl").write_text('{"key": 1, "vector": [1, 2]}\n{"key": 2, "vector": [1, 2\n')
    r = run("build", tmp_path / "x", "--input", tmp_path / "v.jsonl", "--metric", "l2", ok=False)
    assert r.exit_code == 1 and r.stderr.splitlines()[-1].startswith(
        f"Error: {tmp_path / 'v.jsonl'}:2: not valid JSON")
    assert not (tmp_path / "x").exists()


def test_errors_exit_1_with_error_prefix(tmp_path, built):
    ix, _, _ = built
    r = run("query", tmp_path, "--input", tmp_path / "queries.npy", ok=False)
    assert r.exit_code == 1 and r.stderr.startswith("Error: ") and "not an lshdb index" in r.stderr
    r = run("create", tmp_path / "n", "--metric", "l3", "--dim", 4, ok=False)
    assert r.exit_code == 1 and "Error: " in r.stderr
    r = run("create", tmp_path / "n", "--metric", "l2", ok=False)  # missing --dim
    assert r.exit_code == 1 and "Error: Missing option '--dim'" in r.stderr
    np.save(tmp_path / "q5.npy", np.ones((1, 5), np.float32))
    r = run("query", ix, "--input", tmp_path / "q5.npy", ok=False)
    assert r.exit_code == 1 and r.stderr == "Error: queries have dimension 5; this index expects 32\n"
    r = run("add", ix, "--input", tmp_path / "nope.npy", ok=False)
    assert r.exit_code == 1 and "does not exist" in r.stderr


def test_a_failed_build_leaves_no_index_behind(tmp_path, data):
    X, _ = data
    bad = X[:20].copy()
    bad[13, 4] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    ix = tmp_path / "ix.lshdb"
    for _ in range(2):  # the same command fails the same way again, not with "exists"
        r = run("build", ix, "--input", tmp_path / "bad.npy", "--metric", "l2", ok=False)
        assert r.exit_code == 1 and "NaN" in r.stderr, r.stderr
        assert not ix.exists()
    np.save(tmp_path / "good.npy", X[:20])
    assert lines(run("build", ix, "--input", tmp_path / "good.npy", "--metric", "l2"))[0][
        "added"] == 20


def test_load_errors_name_the_row_of_the_file_and_empty_inputs_say_so(built, tmp_path, data):
    ix, X, _ = built
    more = X[:10] + 0.5
    more[7, 3] = np.inf
    np.save(tmp_path / "more.npy", more)
    (tmp_path / "k.txt").write_text("".join(f"m{i}\n" for i in range(10)))
    r = run("add", ix, "--input", tmp_path / "more.npy", "--keys", tmp_path / "k.txt",
            "--batch-size", 3, ok=False)
    assert r.exit_code == 1 and r.stderr.splitlines()[-1].startswith(
        "Error: row 7 of the input holds NaN or inf")
    assert r.stderr.splitlines()[0] == ("6 of 10 rows were committed before the error (the "
                                        "input's first 6); add the rest with --skip-existing")
    with lshdb.open(str(ix), readonly=True) as index:  # the batches before it committed
        assert [f"m{i}" in index for i in range(10)] == [True] * 6 + [False] * 4
    np.save(tmp_path / "empty.npy", np.zeros((0, 32), np.float32))
    r = run("add", ix, "--input", tmp_path / "empty.npy", ok=False)
    assert r.exit_code == 1 and r.stderr == "Error: the input holds no vectors or items\n"
    r = run("query", ix, "--input", tmp_path / "empty.npy", ok=False)
    assert r.exit_code == 1 and r.stderr == "Error: the input holds no queries\n"
    r = run("add", ix, "--input", tmp_path / "more.npy", "--batch-size", 0, ok=False)
    assert r.exit_code == 1 and "0 is not in the range x>=1" in r.stderr


def test_hints_name_the_flags_not_the_python_arguments(built, tmp_path):
    ix, X, _ = built
    np.save(tmp_path / "again.npy", X[:2])
    r = run("add", ix, "--input", tmp_path / "again.npy", ok=False)  # keys 0 and 1 exist
    assert r.exit_code == 1 and "use --upsert to replace them" in r.stderr
    (tmp_path / "gone.txt").write_text("no-such-key\n")
    r = run("delete", ix, "--keys", tmp_path / "gone.txt", ok=False)
    assert r.exit_code == 1 and "pass --missing-ok to skip them" in r.stderr
    assert "missing_ok=True" not in r.stderr


def test_codes_crosspolytope_and_query_controls_from_the_command_line(tmp_path, data):
    X, Q = data
    np.save(tmp_path / "base.npy", X)
    np.save(tmp_path / "q.npy", Q[:4])
    ix = tmp_path / "cp.lshdb"
    out = lines(run("build", ix, "--input", tmp_path / "base.npy", "--metric", "cosine",
                    "--family", "crosspolytope", "--tables", 8, "--codes", 128))[0]
    assert out["family"]["family"] == "crosspolytope" and out["added"] == len(X)
    with lshdb.open(str(ix), readonly=True) as index:
        assert index.options["codes"] == 128
        want = [index.query(q, k=5, min_hits=2, rerank=5) for q in Q[:4]]
        # (the settings matter: the stored defaults answer otherwise)
        assert want != [index.query(q, k=5) for q in Q[:4]]
    res = lines(run("query", ix, "--input", tmp_path / "q.npy", "-k", 5, "--min-hits", 2,
                    "--rerank", 5))
    assert [[(h["key"], pytest.approx(h["distance"], abs=1e-6)) for h in r["results"]]
            for r in res] == want


def test_bad_numbers_are_usage_errors_not_tracebacks(built, tmp_path):
    ix, _, _ = built
    for args, says in [(("get", ix, "abc", "--int-key"), "'abc' is not an integer"),
                       (("tune", ix, "-k", 0), "'-k': 0 is not in the range x>=1"),
                       (("tune", ix, "--queries", -5), "-5 is not in the range x>=1"),
                       (("tune", "--input", tmp_path / "base.npy", "--metric", "l2",
                         "--sample", 0), "0 is not in the range x>=1"),
                       (("demo", "-n", 5), "5 is not in the range x>=1000"),
                       (("demo", "-n", -3), "-3 is not in the range x>=1000"),
                       (("demo", "--queries", 0), "0 is not in the range x>=1"),
                       (("create", tmp_path / "j", "--metric", "jaccard", "--dim", 8),
                        "--dim does not apply to jaccard")]:
        r = run(*args, ok=False)
        assert r.exit_code == 1 and says in r.stderr and "Traceback" not in r.output, (args,
                                                                                     r.output)
    assert not (tmp_path / "j").exists()
    r = run("get", ix, "7", "--int-key")
    assert json.loads(r.stdout)["key"] == 7


def test_query_lines_need_no_keys(built, tmp_path):
    ix, X, Q = built
    with open(tmp_path / "q.jsonl", "w") as f:
        for q in Q[:3]:
            f.write(json.dumps({"vector": q.tolist()}) + "\n")
    res = lines(run("query", ix, "--input", tmp_path / "q.jsonl", "-k", 3))
    assert [r["query"] for r in res] == [0, 1, 2] and all(len(r["results"]) == 3 for r in res)
    with lshdb.open(str(ix), readonly=True) as index:
        assert [h["key"] for h in res[1]["results"]] == [k for k, _ in index.query(Q[1], k=3)]


def test_stats_and_check(built):
    ix, X, _ = built
    st = lines(run("stats", ix))[0]
    assert st["live"] == len(X) and st["family"]["k"] == 4 and len(st["tables"]) == 4
    table = run("stats", ix, "--format", "table").stdout
    assert "bytes.postings" in table and "p99" in table
    rep = lines(run("check", ix))[0]
    assert rep["ok"] is True and rep["problems"] == []
    # damage one row: check must fail with exit status 1
    rows = os.path.join(ix, "g000001", "rows.bin")
    with open(rows, "r+b") as f:
        f.seek(64 + 10 * (32 * 4 + 8) + 5)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    r = run("check", ix, "--format", "table", ok=False)
    assert r.exit_code == 1 and "row 10 of" in r.stdout and "fails its checksum" in r.stdout


def test_create_prints_summary(tmp_path):
    out = lines(run("create", tmp_path / "c", "--metric", "cosine", "--dim", 16, "--bits", 8))
    assert out == [{"path": str(tmp_path / "c"), "metric": "cosine", "dim": 16,
                    "family": {"family": "hyperplane", "k": 8, "L": 16, "seed": 0}, "items": 0}]


def test_build_with_target_recall_and_compact(tmp_path, data):
    X, _ = data
    np.save(tmp_path / "x.npy", X)
    out = lines(run("build", tmp_path / "t", "--input", tmp_path / "x.npy", "--metric", "cosine",
                    "--target-recall", "0.97"))
    assert out[0]["added"] == len(X)
    with lshdb.open(str(tmp_path / "t")) as index:
        assert index.options["target_recall"] == 0.97
        index.delete(range(0, len(X), 2))
    rep = lines(run("compact", tmp_path / "t"))[0]
    assert rep["reclaimed_rows"] == len(X) // 2 and rep["generation"] == "g000002"
    bad = run("build", tmp_path / "u", "--input", tmp_path / "x.npy", "--metric", "cosine",
              "--target-recall", "1.5", ok=False)
    assert bad.exit_code == 1 and "--target-recall must be in (0, 1)" in bad.stderr
