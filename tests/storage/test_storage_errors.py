"""lmdb's own errors reach callers as lshdb errors, raised from the original."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import lshdb
from lshdb import check


def test_a_failed_lmdb_write_is_a_storage_error_and_commits_nothing(path):
    lshdb.create(path, metric="l2", dim=2, k=1, L=1, w=1.0).close()
    # in a child: a file size limit lets rows.bin grow (16 MiB at a time) but fails LMDB's
    # write of data.mdb at the commit, which lmdb reports as a bare lmdb.Error
    script = textwrap.dedent(f"""
        import json, resource, signal
        import lmdb, numpy as np, lshdb
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (17 << 20, resource.RLIM_INFINITY))
        with lshdb.open({path!r}) as index:
            try:
                index.add([f"{{i:08d}}" + "k" * 460 for i in range(40000)],
                          np.zeros((40000, 2)))
                print(json.dumps({{"raised": None}}))
            except Exception as exc:
                print(json.dumps({{"raised": [c.__name__ for c in type(exc).__mro__],
                                   "cause": type(exc.__cause__).__module__,
                                   "message": str(exc)}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["raised"][:3] == ["StorageError", "LshdbError", "OSError"], got
    assert got["cause"] == "lmdb" and "was not committed" in got["message"]
    with lshdb.open(path, readonly=True) as index:
        assert len(index) == 0
    assert check(path)["ok"]
