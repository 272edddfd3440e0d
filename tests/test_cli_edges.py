"""The command line's rough edges: key fields, summaries, hints, refused options, input files."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import lshdb
from lshdb.cli import cli

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
    assert f"keys: field '{field}' of {corpus}" in dedup.stderr
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
    summary = json.loads(own.stderr.splitlines()[-1])["summary"]
    assert summary["documents"] == 3 and "docs" not in summary
    ix = tmp_path / "ix.lshdb"
    run("build", ix, "--metric", "jaccard", "--input", corpus)
    against = run("dedup", corpus, "--against", ix, "--out", tmp_path / "q.jsonl")
    assert json.loads(against.stderr.splitlines()[-1])["summary"]["documents"] == 3


def test_dedup_help_explains_its_bands():
    from lshdb.theory import optimal_bands

    text = " ".join(run("dedup", "--help").stdout.split())
    assert optimal_bands(0.8, 128, 0.1, 0.9) == (14, 9)  # what dedup uses at 0.8
    assert optimal_bands(0.8, 128) == (9, 13)  # what an index at 0.8 uses
    assert "14 bands of 9 rows at 0.8" in text and "9 x 13 at 0.8" in text
