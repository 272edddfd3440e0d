"""The command line's rough edges: key fields, summaries, hints, refused options, input files."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import lshdb
from lshdb.cli.main import cli

DOCS = ["the quick brown fox jumps over the lazy dog again and again",
        "the quick brown fox jumps over the lazy dog again and again!",
        "an entirely different sentence about something else entirely here"]


def run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, (result.output, result.stderr)
    return result


def write_jsonl(p, rows):
    with open(p, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return p


@pytest.mark.parametrize("field", ["id", "key"])
def test_one_corpus_serves_dedup_build_and_add(tmp_path, field):
    corpus = write_jsonl(tmp_path / "docs.jsonl",
                         [{field: f"d{i}", "text": t} for i, t in enumerate(DOCS)])
    out = tmp_path / "pairs.jsonl"
    dedup = run("dedup", corpus, "--threshold", "0.5", "--out", out)
    assert json.loads(dedup.stderr)["summary"]["key_field"] == field
    assert [json.loads(line)["a"] for line in open(out)] == ["d0"]
    ix = tmp_path / "ix.lshdb"
    build = run("build", ix, "--metric", "jaccard", "--input", corpus)
    assert f"keys: field '{field}' of {corpus}" in build.stderr
    with lshdb.open(ix, readonly=True) as index:
        assert sorted(index.keys()) == ["d0", "d1", "d2"]
    add = run("add", ix, "--input", corpus, "--upsert")
    assert f"keys: field '{field}'" in add.stderr


def test_key_field_overrides_and_a_missing_key_field_is_named(tmp_path):
    corpus = write_jsonl(tmp_path / "docs.jsonl",
                         [{"name": f"n{i}", "id": i, "text": t} for i, t in enumerate(DOCS)])
    ix = tmp_path / "ix.lshdb"
    build = run("build", ix, "--metric", "jaccard", "--input", corpus, "--key-field", "name")
    assert "keys: field" not in build.stderr  # named: nothing to say
    with lshdb.open(ix, readonly=True) as index:
        assert sorted(index.keys()) == ["n0", "n1", "n2"]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"name": "a", "text": "x y"}])
    out = run("build", tmp_path / "b.lshdb", "--metric", "jaccard", "--input", bad, ok=False)
    assert out.exit_code == 1
    assert out.stderr == (f"Error: {bad}: the first record has no 'key' or 'id' field "
                          "(fields: 'name', 'text'); name the key field with --key-field\n")


def test_dedup_summaries_say_documents_in_both_modes(tmp_path):
    corpus = write_jsonl(tmp_path / "docs.jsonl",
                         [{"id": f"d{i}", "text": t} for i, t in enumerate(DOCS)])
    own = run("dedup", corpus, "--out", tmp_path / "p.jsonl")
    summary = json.loads(own.stderr)["summary"]
    assert summary["documents"] == 3 and "docs" not in summary
    ix = tmp_path / "ix.lshdb"
    run("build", ix, "--metric", "jaccard", "--input", corpus)
    against = run("dedup", corpus, "--against", ix, "--out", tmp_path / "q.jsonl")
    assert json.loads(against.stderr)["summary"]["documents"] == 3


def test_dedup_help_explains_its_bands():
    from lshdb.hashing.theory import optimal_bands

    text = " ".join(run("dedup", "--help").stdout.split())
    assert optimal_bands(0.8, 128, 0.1, 0.9) == (14, 9)  # what dedup uses at 0.8
    assert optimal_bands(0.8, 128) == (9, 13)  # what an index at 0.8 uses
    assert "14 bands of 9 rows at 0.8" in text and "9 x 13 at 0.8" in text


def _dense(tmp_path, codes=None):
    X = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    path = str(tmp_path / ("codes.lshdb" if codes else "plain.lshdb"))
    with lshdb.create(path, metric="cosine", dim=8, k=4, L=3,
                      **({"codes": codes} if codes else {})) as index:
        index.add(range(300), X)
    np.save(tmp_path / "q.npy", X[:2])
    return path, X


def test_options_a_query_would_ignore_are_refused(tmp_path):
    path, X = _dense(tmp_path)
    coded, _ = _dense(tmp_path, codes=64)
    with lshdb.open(path, readonly=True) as index:
        with pytest.raises(lshdb.InvalidParameterError, match="probes must be an int >= 1"):
            index.query(X[0], scan=True, probes=0)
        with pytest.raises(lshdb.InvalidParameterError, match="rerank applies to an index "
                                                              "with hash codes"):
            index.query_batch(X[:2], rerank=50)
        with pytest.raises(lshdb.InvalidParameterError, match="exceeds the index's 3 tables"):
            index.query(X[0], min_hits=4)
        assert index.query(X[0], k=1, min_hits=3)[0][0] == 0  # as many as tables: fine
    with lshdb.open(coded, readonly=True) as index:
        assert index.query(X[0], k=1, rerank=50)[0][0] == 0
    jac = str(tmp_path / "j.lshdb")
    with lshdb.create(jac, metric="jaccard") as index:
        index.add(["a"], ["some words in a document here"])
        with pytest.raises(lshdb.InvalidParameterError, match="probes do not apply"):
            index.query("some words in a document here", probes=2)
    q = tmp_path / "q.npy"
    for args, says in [(("--scan", "--probes", 0), "--probes must be an int >= 1"),
                       (("--rerank", 10), "--rerank applies to an index with hash codes"),
                       (("--min-hits", 9), "--min-hits 9 exceeds the index's 3 tables")]:
        out = run("query", path, "--input", q, *args, ok=False)
        assert out.exit_code == 1 and out.stderr.startswith("Error: ") and says in out.stderr, \
            out.stderr


def test_ctrl_c_says_what_was_committed_and_skip_existing_resumes(tmp_path):
    n = 100_000
    X = np.random.default_rng(1).standard_normal((n, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    ix = str(tmp_path / "ix.lshdb")
    lshdb.create(ix, metric="l2", dim=8, k=4, L=2, w=4.0).close()
    proc = subprocess.Popen([sys.executable, "-m", "lshdb", "add", ix, "--input",
                             str(tmp_path / "x.npy"), "--batch-size", "100"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(6000):  # until the first batches are committed (bounded)
            with lshdb.open(ix, readonly=True) as index:
                if len(index) >= 200:
                    break
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    said = re.search(rf"(\d+) of {n} rows were committed before the interruption \(the "
                     r"input's first \1\); add the rest with --skip-existing", err)
    assert said, err
    assert err.endswith("Error: aborted\n")
    committed = int(said.group(1))
    with lshdb.open(ix, readonly=True) as index:
        assert 200 <= committed < n and sorted(index.keys()) == list(range(committed))
    out = run("add", ix, "--input", tmp_path / "x.npy", "--skip-existing")
    got = json.loads(out.stdout)
    assert (got["added"], got["skipped"], got["items"]) == (n - committed, committed, n)
    with lshdb.open(ix, readonly=True) as index:
        st = index.stats(buckets=False)
        assert st["rows"] == st["live"] == n  # nothing committed before was written again
        np.testing.assert_array_equal(index.get(n - 1), X[n - 1])


def test_upsert_reports_replaced_keys_and_get_hints_int_keys(tmp_path):
    X = np.random.default_rng(2).standard_normal((50, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    ix = tmp_path / "ix.lshdb"
    run("build", ix, "--metric", "l2", "--input", tmp_path / "x.npy")
    np.save(tmp_path / "y.npy", np.concatenate([X[:30], X[:20]]))  # keys 0..49: 50 exist
    got = json.loads(run("add", ix, "--input", tmp_path / "y.npy", "--upsert").stdout)
    assert (got["added"], got["replaced"], got["items"]) == (0, 50, 50)
    with lshdb.open(ix) as index:
        assert index.upsert([49, 50], X[:2]) == 1
    out = run("get", ix, "7", ok=False)
    assert out.exit_code == 1 and out.stderr == (
        "Error: key '7' (a string) is not in the index, but the integer 7 is: add --int-key\n")
    assert json.loads(run("get", ix, "7", "--int-key").stdout)["key"] == 7
    assert run("get", ix, "x", ok=False).stderr == "Error: key 'x' is not in the index\n"


def test_a_writer_waiting_for_the_lock_says_so_and_times_out(tmp_path):
    X = np.random.default_rng(3).standard_normal((20, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    (tmp_path / "keys.txt").write_text("0\n1\n")
    ix = str(tmp_path / "ix.lshdb")
    lshdb.create(ix, metric="l2", dim=4).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import lshdb, sys\n"
         f"with lshdb.open({ix!r}).writer():\n    print('held', flush=True)\n"
         "    sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"  # the other process holds the lock
        for args in (("add", ix, "--input", tmp_path / "x.npy"),
                     ("delete", ix, "--keys", tmp_path / "keys.txt"),
                     ("compact", ix)):
            out = run(*args, "--timeout", "0.2", ok=False)
            assert out.exit_code == 1
            assert out.stderr.splitlines()[0] == (
                f"waiting for the write lock of {ix}: another process is writing "
                "(for up to 0.2 s: --timeout)"), out.stderr
            assert "Error: another writer held the write lock" in out.stderr
            assert "raise --timeout" in out.stderr
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(30)
    out = run("add", ix, "--input", tmp_path / "x.npy", "--timeout", "5")
    assert "waiting" not in out.stderr and json.loads(out.stdout)["added"] == 20
    assert run("build", tmp_path / "b.lshdb", "--metric", "l2", "--input", tmp_path / "x.npy",
               "--timeout", "1").exit_code == 0


def test_messages_speak_the_command_line(tmp_path):
    for args, says in [(("--bits", 0), "Error: --bits must be an int in 1..64; found 0\n"),
                       (("--tables", 0), "Error: --tables must be an int in 1..1000; found 0\n"),
                       (("--width", -1), "Error: --width must be a positive number; found -1.0\n"),
                       (("--max-value", 3), "Error: --max-value applies to --family unary only\n"),
                       (("--num-perm", 64), "Error: --num-perm does not apply to this metric\n")]:
        out = run("create", tmp_path / "x", "--metric", "l2", "--dim", 8, *args, ok=False)
        assert out.stderr == says
    run("create", tmp_path / "c", "--metric", "cosine", "--dim", 8)
    out = run("create", tmp_path / "c", "--metric", "cosine", "--dim", 8, ok=False)
    assert out.stderr == (f"Error: {tmp_path / 'c'} already exists; choose a new path or add "
                          "to it with lshdb add\n")
    (tmp_path / "empty").mkdir()
    out = run("stats", tmp_path / "empty", ok=False)
    assert out.stderr == (f"Error: {tmp_path / 'empty'} is not an lshdb index (no CURRENT "
                          "file); create one with lshdb create\n")


def test_input_problems_are_named_as_what_they_are(tmp_path):
    ix = tmp_path / "ix.lshdb"
    strings = write_jsonl(tmp_path / "s.jsonl", [{"key": 1, "vector": [1.0, 2.0]},
                                                 {"key": 2, "vector": ["a", "b"]}])
    out = run("build", ix, "--metric", "l2", "--input", strings, ok=False)
    assert out.stderr.splitlines()[-1] == (
        f"Error: {strings}:2: 'vector' holds a str ('a'); vectors are lists of numbers")
    jac = tmp_path / "j.lshdb"
    run("create", jac, "--metric", "jaccard")
    np.save(tmp_path / "v.npy", np.zeros((2, 4), np.float32))
    out = run("add", jac, "--input", tmp_path / "v.npy", ok=False)
    assert out.stderr == (f"Error: {tmp_path / 'v.npy'} holds vectors (.npy); a jaccard index "
                          "takes documents or token sets from JSON lines (.jsonl), one per "
                          "line\n")
    (tmp_path / "u.jsonl").write_text('{"key": 1, "text": "no end')  # json says "... at"
    for extra in ((), ("--tokens-field", "text")):
        out = run("add", jac, "--input", tmp_path / "u.jsonl", "--key-field", "key", *extra,
                  ok=False)
        assert out.stderr == (f"Error: {tmp_path / 'u.jsonl'}:1: not valid JSON "
                              "(Unterminated string starting at column 20)\n"), out.stderr


def test_check_reports_each_problem_once_without_advising_itself(tmp_path):
    (tmp_path / "empty").mkdir()
    out = run("check", tmp_path / "empty", ok=False)
    report = json.loads(out.stdout)
    assert report["problems"] == [f"{tmp_path / 'empty'} is not an lshdb index (no CURRENT "
                                  "file); create one with lshdb create"]
    ix = str(tmp_path / "ix.lshdb")
    with lshdb.create(ix, metric="l2", dim=4, k=2, L=2, w=4.0) as index:
        index.add(range(100), np.random.default_rng(4).standard_normal((100, 4)))
    import lmdb

    env = lmdb.open(f"{ix}/g000001", max_dbs=8)  # a posting names an id without a key
    with env.begin(write=True) as txn:
        txn.delete((7).to_bytes(8, "big"), db=env.open_db(b"id2key", txn=txn))
    env.close()
    report = json.loads(run("check", ix, ok=False).stdout)
    assert report["problems"] and not any("lshdb check" in p for p in report["problems"])


def test_json_output_has_no_float_noise(tmp_path):
    X = np.array([[0.1, 0.2], [0.3, 0.7], [0.5, 0.5]], dtype=np.float32)
    np.save(tmp_path / "x.npy", X)
    ix = tmp_path / "ix.lshdb"
    run("build", ix, "--metric", "l1", "--input", tmp_path / "x.npy")
    assert run("get", ix, "0", "--int-key").stdout == '{"key": 0, "vector": [0.1, 0.2]}\n'
    np.save(tmp_path / "q.npy", np.array([[0.1, 0.2]], dtype=np.float32))
    res = run("query", ix, "--input", tmp_path / "q.npy", "-k", 3).stdout
    assert [h["distance"] for h in json.loads(res)["results"]] == [0.0, 0.7, 0.7]
    assert "0000000" not in res and "9999999" not in res


def test_long_commands_report_progress_in_lines_without_a_terminal(tmp_path, monkeypatch):
    from lshdb.cli import progress

    X = np.random.default_rng(5).standard_normal((800, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    ix = tmp_path / "ix.lshdb"
    run("build", ix, "--metric", "cosine", "--input", tmp_path / "x.npy", "--batch-size", 100)
    monkeypatch.setattr(progress, "PROGRESS_EVERY", 1e9)  # within the interval: no line
    assert not run("tune", ix, "--queries", 20).stderr
    monkeypatch.setattr(progress, "PROGRESS_EVERY", 0.0)  # a line at every step
    out = run("tune", ix, "--queries", 20)
    steps = [line for line in out.stderr.splitlines() if line.startswith("queries: ")]
    assert [s.split()[1] for s in steps] == [f"{j}/20" for j in range(1, 20)], out.stderr
    assert json.loads(out.stdout)["queries"] == 20  # stdout stays one JSON record
    out = run("add", ix, "--input", tmp_path / "x.npy", "--upsert", "--batch-size", 100)
    assert [line.split()[1] for line in out.stderr.splitlines()] == [
        f"{j}/800" for j in range(100, 800, 100)]


def test_skip_existing_names_a_bad_row_by_its_place_in_the_input(tmp_path):
    X = np.random.default_rng(6).standard_normal((10, 4)).astype(np.float32)
    np.save(tmp_path / "head.npy", X[:5])
    ix = tmp_path / "ix.lshdb"
    run("build", ix, "--metric", "l2", "--input", tmp_path / "head.npy")
    X[7, 2] = np.nan
    np.save(tmp_path / "all.npy", X)
    out = run("add", ix, "--input", tmp_path / "all.npy", "--skip-existing", ok=False)
    assert out.stderr.startswith("Error: row 7 of the input holds NaN or inf"), out.stderr
    with lshdb.open(str(ix)) as index:  # the Python API counts the batch's rows alike
        with pytest.raises(lshdb.InvalidVectorError) as bad:
            index.add(range(10), X, skip_existing=True)
        assert bad.value.row == 7 and str(bad.value).startswith("vectors: row 7 holds NaN")
        assert len(index) == 5
