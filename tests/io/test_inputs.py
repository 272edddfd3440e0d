"""Input files the CLI reads: .bvecs and .ivecs vectors, keys files in JSON lines."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import lshdb
from lshdb.cli.main import cli
from lshdb.errors import InputFormatError
from lshdb.io.inputs import open_vectors, read_keys


def run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, (result.output, result.stderr)
    return result


def write_vecs(path, X, dtype):
    """The *vecs layout, written independently: per vector an int32 dimension, then values."""
    with open(path, "wb") as f:
        for row in X:
            f.write(np.int32(len(row)).astype("<i4").tobytes())
            f.write(np.asarray(row, dtype=dtype).tobytes())


@pytest.mark.parametrize("ext,dtype", [(".bvecs", "u1"), (".ivecs", "<i4")])
def test_bvecs_and_ivecs_read_as_written(tmp_path, ext, dtype):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 200, (300, 12))
    f = tmp_path / f"x{ext}"
    write_vecs(f, X, dtype)
    src = open_vectors(str(f))
    assert (len(src), src.dim) == (300, 12)
    got = np.concatenate([b for _, b in src.blocks(100)])
    assert got.dtype == np.dtype(dtype) and np.array_equal(got, X)
    ix = tmp_path / "ix.lshdb"  # through the CLI, into an index, and back
    run("build", ix, "--metric", "l1", "--input", f)
    with lshdb.open(str(ix), readonly=True) as index:
        assert len(index) == 300
        np.testing.assert_array_equal(index.get(17), X[17].astype(np.float32))
        assert index.query(X[42], k=1)[0] == (42, 0.0)


def test_damaged_vecs_files_are_refused(tmp_path):
    f = tmp_path / "x.ivecs"
    write_vecs(f, np.ones((3, 4)), "<i4")
    with open(f, "ab") as out:
        out.write(b"\x01\x02")  # a torn last record
    with pytest.raises(InputFormatError, match="not a whole number of .ivecs records"):
        open_vectors(str(f))
    g = tmp_path / "y.bvecs"
    with open(g, "wb") as out:  # a record that claims another dimension
        out.write(np.int32(4).tobytes() + bytes(4) + np.int32(3).tobytes() + bytes(4))
    with pytest.raises(InputFormatError, match="record 1 has dimension 3"):
        open_vectors(str(g))


def test_a_jsonl_keys_file_gives_string_and_integer_keys(tmp_path):
    X = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    keys = tmp_path / "keys.jsonl"
    keys.write_text('"007"\n42\n\n"a b"\n-3\n')  # "007" stays a string; blank lines skipped
    assert read_keys(str(keys)) == ["007", 42, "a b", -3]
    ix = tmp_path / "ix.lshdb"
    run("build", ix, "--metric", "l2", "--input", tmp_path / "x.npy", "--keys", keys)
    with lshdb.open(str(ix), readonly=True) as index:
        assert sorted(map(str, index.keys())) == ["-3", "007", "42", "a b"]
        np.testing.assert_array_equal(index.get("007"), X[0])
        np.testing.assert_array_equal(index.get(42), X[1])
        assert "42" not in index and 42 in index
    (tmp_path / "gone.jsonl").write_text('"a b"\n-3\n')
    out = run("delete", ix, "--keys", tmp_path / "gone.jsonl")
    assert json.loads(out.stdout) == {"deleted": 2, "items": 2}


@pytest.mark.parametrize("line,says", [("1.5", "a key must be a string or an integer"),
                                       ("true", "a key must be a string or an integer"),
                                       ('{"k": 1}', "a key must be a string or an integer"),
                                       ('"open', "not valid JSON")])
def test_bad_jsonl_keys_name_their_line(tmp_path, line, says):
    keys = tmp_path / "keys.jsonl"
    keys.write_text(f'"fine"\n{line}\n')
    with pytest.raises(InputFormatError, match=f"keys.jsonl:2: {says}"):
        read_keys(str(keys))
