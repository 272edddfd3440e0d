"""Signatures made elsewhere: only an index whose signatures they can be takes them."""

from __future__ import annotations

import datasketch
import numpy as np
import pytest
from click.testing import CliRunner

import lshdb
from lshdb.cli.main import cli

WORDS = [f"w{i}" for i in range(60)]


def test_an_oph_index_refuses_ready_signatures(path):
    m = datasketch.MinHash(num_perm=128, seed=1)
    m.update_batch([w.encode() for w in WORDS])
    with lshdb.create(path, metric="jaccard") as index:  # mode "oph" by default
        index.add(["doc"], [" ".join(WORDS)])
        with pytest.raises(lshdb.InvalidParameterError, match="takes no ready signatures"):
            index.add(["sig"], m.hashvalues[None, :].astype(np.uint32))
        with pytest.raises(lshdb.InvalidParameterError, match="mode='classic'"):
            index.query(m.hashvalues.astype(np.uint32))
        assert len(index) == 1


def test_datasketch_signatures_meet_documents_in_a_classic_index_of_seed_1(path):
    sets = [set(WORDS[j : j + 30]) for j in range(0, 30, 3)]
    sigs = []
    for s in sets:
        m = datasketch.MinHash(num_perm=128, seed=1)
        m.update_batch([t.encode() for t in s])
        sigs.append(m.hashvalues)
    with lshdb.create(path, metric="jaccard", mode="classic", seed=1, threshold=0.5) as index:
        index.add(range(len(sets)), np.array(sigs))  # signatures in ...
        for i, s in enumerate(sets):  # ... found by their token sets
            assert index.query(s, k=1) == [(i, 1.0)]


def test_stats_of_a_jaccard_index_describe_its_items(path):
    with lshdb.create(path, metric="jaccard", mode="classic", seed=1, threshold=0.7,
                      shingle="char:4", store_tokens=True) as index:
        index.add(["a"], ["some words to sign"])
        st = index.stats(buckets=False)
    assert "dim" not in st
    assert {k: st[k] for k in ("num_perm", "mode", "seed", "threshold", "shingle",
                               "store_tokens")} == {
        "num_perm": 128, "mode": "classic", "seed": 1, "threshold": 0.7, "shingle": "char:4",
        "store_tokens": True}
    out = CliRunner().invoke(cli, ["stats", path, "--no-buckets", "--format", "table"])
    assert out.exit_code == 0, out.output
    fields = dict(line.split(None, 1) for line in out.stdout.splitlines()[1:] if line.strip()
                  and not line.startswith((" ", "S-curve")) and "|" not in line)
    assert fields["mode"] == "classic" and fields["seed"] == "1" and "dim" not in fields
