"""`lshdb serve` as a real server: a subprocess on a free loopback port, real HTTP, real
signals (SIGKILL of a worker, SIGTERM of the server), real LMDB."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

import lshdb
from lshdb.errors import (
    DimensionMismatchError,
    InvalidKeyError,
    InvalidParameterError,
    InvalidVectorError,
    KeyExistsError,
    KeyNotFoundError,
    ReadOnlyError,
    ServerError,
)

TOKEN = "s3cret-token"


class Server:
    """``python -m lshdb serve PATH --port 0 ...`` and the URL it printed."""

    def __init__(self, path, *args, log):
        self.log = open(log, "wb")  # a file, not a pipe that could fill up and block it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lshdb", "serve", str(path), "--port", "0",
             "--log-level", "warning", *map(str, args)],
            stdout=subprocess.PIPE, stderr=self.log)
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise AssertionError(f"the server did not start: {open(log).read()[-2000:]}")
        info = json.loads(line)
        self.url, self.pid, self.n = info["url"], info["pid"], info["workers"]
        assert self.url.startswith("http://127.0.0.1:")
        for _ in range(300):  # bounded: until every worker has started and one answers
            try:
                st = httpx.get(self.url + "/healthz", timeout=2)
                if st.status_code == 200 and all(w["pid"] for w in self.workers()):
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        else:
            raise AssertionError("the server did not answer /healthz")

    def log_text(self):
        self.log.flush()
        return open(self.log.name, encoding="utf-8", errors="replace").read()

    def reader_slots(self):
        r = httpx.get(self.url + "/stats", headers=self.headers(), timeout=10)
        return r.json()["server"]["reader_slots"]

    def headers(self):
        return {"Authorization": f"Bearer {TOKEN}"}

    def workers(self):
        r = httpx.get(self.url + "/stats", headers=self.headers(), timeout=10)
        return r.json()["server"]["workers"]

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.proc.stdout.close()
            self.log.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from lshdb.io.datasets import clustered

    X, Q = clustered(2000, 32, seed=7, cluster_size=50, n_queries=50)
    path = tmp_path_factory.mktemp("serve") / "ix.lshdb"
    with lshdb.create(path, metric="cosine", dim=32) as index:
        index.add(range(1990), X[:1990])
        index.add(["alpha", "beta", b"\x00raw\xff"], X[1990:1993])
    return path, X, Q


@pytest.fixture(scope="module")
def server(built, tmp_path_factory):
    path = built[0]
    s = Server(path, "--workers", 2, "--max-body", "64K", "--max-batch", 60,
               "--write-timeout", 0.5, log=tmp_path_factory.mktemp("log") / "serve.log")
    yield s
    assert s.stop() == 0


def test_answers_equal_the_embedded_index(built, server):
    path, X, Q = built
    c = lshdb.connect(server.url)
    with lshdb.open(path, readonly=True) as index:
        for q in Q[:10]:
            assert c.query(q, k=5) == index.query(q, k=5)
        assert c.query(Q[0], k=7, probes=3) == index.query(Q[0], k=7, probes=3)
        assert c.query(Q[1], scan=True) == index.query(Q[1], scan=True)
        radius = index.query(Q[2], k=10)[5][1]  # a radius query: every item within it
        assert c.query(Q[2], k=None, threshold=radius) == \
            index.query(Q[2], k=None, threshold=radius)
        assert c.query_batch(Q[:20], k=4) == index.query_batch(Q[:20], k=4)
        for key in (0, 1234, "alpha", b"\x00raw\xff"):
            got = c.get(key)
            assert got.dtype == np.float32 and np.array_equal(got, index.get(key))
        assert len(c) == len(index) == 1993
        assert "beta" in c and "gamma" not in c
        st = c.stats(buckets=False)
        assert st["rows"] == 1993 and st["generation"] == index.generation
        (key, d), = index.query(X[1234], k=1)
        assert httpx.post(server.url + "/query", json={"vector": X[1234].tolist(), "k": 1}
                          ).json() == {"results": [{"key": key, "distance": d}]}
    health = httpx.get(server.url + "/healthz").json()
    assert health["status"] == "ok" and health["rows"] == 1993
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    assert set(paths) == {"/healthz", "/stats", "/query", "/items", "/items/{key}",
                          "/openapi.json"}


def _client_on(server, worker, tries=400):
    """A client whose connection landed on the given worker (a new connection goes to the
    worker holding the fewest)."""
    for _ in range(tries):
        c = lshdb.connect(server.url)
        if c.health()["worker"] == worker:
            return c
        c.close()
    raise AssertionError(f"no connection reached worker {worker} in {tries} tries")


def test_a_write_through_one_worker_is_seen_by_the_others(built, server):
    X = built[1]
    on0, on1 = _client_on(server, 0), _client_on(server, 1)
    before = len(on1)
    on0.add(["w-new"], X[:1] * -1)
    assert on1.health()["worker"] == 1 and len(on1) == before + 1
    assert on1.query(X[0] * -1, k=1)[0][0] == "w-new"
    assert np.allclose(on1.get("w-new"), on0.get("w-new"))
    on1.upsert(["w-new"], X[1:2])
    assert on0.query(X[1], k=1)[0][0] in ("w-new", 1)  # X[1] itself is stored as key 1
    assert on0.get("w-new").tolist() == on1.get("w-new").tolist() != on0.get(1).tolist() * 0
    assert on1.delete(["w-new"]) == 1 and len(on0) == before


def test_keep_alive_connections_are_spread_over_the_workers(built, tmp_path):
    s = Server(built[0], "--workers", 2, "--readonly", log=tmp_path / "serve.log")
    clients = []
    try:
        for _ in range(6):  # one keep-alive connection each, opened in turn and kept
            clients.append(lshdb.connect(s.url))
            clients[-1].health()
        on = [c.health()["worker"] for c in clients]
        assert sorted(on) == [0, 0, 0, 1, 1, 1]
        held = [w["connections"] for w in s.workers()]  # the clients' 6, and this request's
        assert sum(held) == 7 and min(held) == 3
    finally:
        for c in clients:
            c.close()
        assert s.stop() == 0


def _error(r, status, type_):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == type_ and err["message"]


def test_every_bad_request_gets_its_status_and_leaves_workers_and_index_alone(built, server):
    path, X, Q = built
    u, c = server.url, lshdb.connect(server.url)
    pids = sorted(w["pid"] for w in server.workers())
    state = c.stats(buckets=False)
    v = X[0].tolist()
    post = httpx.post
    _error(post(u + "/query", content=b"{not json"), 400, "InputFormatError")
    _error(post(u + "/query", content=b"[1, 2]"), 400, "InputFormatError")
    _error(post(u + "/query", content=b"[" * 50_000), 400, "InputFormatError")  # too deep
    _error(post(u + "/query", json={"vector": v[:5]}), 400, "DimensionMismatchError")
    _error(post(u + "/query", content=b'{"vector": [NaN' + b", 0.5" * 31 + b"]}"), 400,
           "InvalidVectorError")
    _error(post(u + "/query", json={"vector": ["a"] * 32}), 400, "InvalidVectorError")
    _error(post(u + "/query", json={"vector": v, "k": "ten"}), 400, "InvalidParameterError")
    _error(post(u + "/query", json={"vector": v, "colour": 1}), 400, "InvalidParameterError")
    _error(post(u + "/query", json={"k": 3}), 400, "InvalidParameterError")
    _error(post(u + "/items", json={"keys": [1.5], "vectors": [v]}), 400, "InvalidKeyError")
    _error(post(u + "/items", json={"keys": ["d", "d"], "vectors": [v, v]}), 400,
           "DuplicateKeyError")
    _error(httpx.get(u + "/items/7?type=float"), 400, "InvalidParameterError")
    _error(httpx.get(u + "/items/7"), 404, "KeyNotFoundError")  # "7", not 7
    _error(httpx.get(u + "/nowhere"), 404, "NotFound")
    _error(httpx.put(u + "/query"), 405, "MethodNotAllowed")
    _error(httpx.request("DELETE", u + "/items", json={"keys": ["nope"]}), 404,
           "KeyNotFoundError")
    _error(post(u + "/items", json={"keys": [5], "vectors": [v]}), 409, "KeyExistsError")
    _error(post(u + "/query", content=b" " * 70_000), 413, "PayloadTooLarge")
    _error(post(u + "/query", json={"vectors": [v] * 61}), 413, "PayloadTooLarge")
    # the client raises what an embedded index raises
    with pytest.raises(DimensionMismatchError):
        c.query(Q[0][:5])
    with pytest.raises(KeyNotFoundError):
        c.get("missing")
    with pytest.raises(KeyExistsError):
        c.add([5], X[:1])
    with pytest.raises(InvalidVectorError):
        c.query(np.full(32, np.nan))
    with pytest.raises(InvalidKeyError):
        c.add([2.5], X[:1])
    with pytest.raises(ServerError) as e:
        c.query_batch(np.repeat(Q[:1], 61, axis=0))
    assert e.value.status == 413
    # 503: a writer beside the server holds the write lock longer than --write-timeout
    with lshdb.open(path) as index, index.writer():
        _error(post(u + "/items", json={"keys": ["late"], "vectors": [v]}), 503,
               "LockTimeoutError")
    assert sorted(w["pid"] for w in server.workers()) == pids  # no worker went down
    after = c.stats(buckets=False)
    assert (after["rows"], after["live"], after["generation"]) == \
        (state["rows"], state["live"], state["generation"])
    assert c.query(Q[0]) == lshdb.open(path, readonly=True).query(Q[0])


def _leave_a_stale_reader_slot(path):
    """A process killed with SIGKILL while it holds a read snapshot of the index."""
    code = ("import sys, time, lshdb\n"
            "with lshdb.open(sys.argv[1], readonly=True) as ix, ix.reader():\n"
            "    print('in', flush=True); time.sleep(600)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"in\n"
    with lshdb.open(path, readonly=True) as index:
        assert index.reader_slots()["active"] == 1
    p.kill()
    p.wait()
    p.stdout.close()


def test_token_and_readonly(built, tmp_path):
    path, X, Q = built
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    _leave_a_stale_reader_slot(path)
    s = Server(path, "--workers", 1, "--readonly", "--token-file", token_file,
               log=tmp_path / "serve.log")
    try:
        assert "cleared 1 stale reader slot" in s.log_text()  # at start
        assert s.reader_slots()["active"] == 0
        v = X[0].tolist()
        _error(httpx.post(s.url + "/query", json={"vector": v}), 401, "Unauthorized")
        _error(httpx.post(s.url + "/query", json={"vector": v},
                          headers={"Authorization": "Bearer wrong"}), 401, "Unauthorized")
        _error(httpx.get(s.url + "/stats", headers={"Authorization": TOKEN}), 401,
               "Unauthorized")
        assert httpx.get(s.url + "/healthz").status_code == 200  # probes need no token
        with pytest.raises(ServerError) as e:
            lshdb.connect(s.url).query(Q[0])
        assert e.value.status == 401
        for bad in ("", "two words", "a\r\nX-Injected: 1", "caf\u00e9"):
            with pytest.raises(InvalidParameterError, match="printable ASCII"):
                lshdb.connect(s.url, token=bad)
        c = lshdb.connect(s.url, token=TOKEN)
        with lshdb.open(path, readonly=True) as index:
            assert c.query(Q[0]) == index.query(Q[0])
        with pytest.raises(ReadOnlyError):
            c.add(["ro"], X[:1])
        _error(httpx.request("DELETE", s.url + "/items", json={"keys": [1]},
                             headers=s.headers()), 403, "ReadOnlyError")
        assert len(c) == 1993 and s.workers()[0]["errors_4xx"] == 6
    finally:
        assert s.stop() == 0


def test_a_killed_worker_is_replaced_while_the_others_answer(built, server):
    path, X, Q = built
    with lshdb.open(path, readonly=True) as index:
        expected = [index.query(q, k=3) for q in Q]
    before = {w["worker"]: w for w in server.workers()}
    os.kill(before[0]["pid"], signal.SIGKILL)
    answered, replaced = 0, None
    for i in range(600):  # bounded: until the replacement answers
        c = lshdb.connect(server.url)  # a new connection: accepted by a live worker
        assert c.query(Q[i % len(Q)], k=3) == expected[i % len(Q)]
        answered += 1
        w0 = next(w for w in server.workers() if w["worker"] == 0)
        if w0["pid"] not in (0, before[0]["pid"]) and w0["restarts"] == 1:
            replaced = w0["pid"]
            break
        time.sleep(0.02)
    assert replaced is not None and answered >= 1
    on0 = _client_on(server, 0)  # the replacement answers too
    assert on0.query(Q[0], k=3) == expected[0]
    assert next(w for w in server.workers() if w["worker"] == 1)["pid"] == before[1]["pid"]


def test_sigterm_finishes_the_write_in_flight_and_releases_the_lock(built, tmp_path):
    src, X, _ = built
    path = tmp_path / "own.lshdb"
    with lshdb.create(path, metric="cosine", dim=32) as index:
        index.add(range(100), X[:100])
    s = Server(path, "--workers", 1, "--write-timeout", 30, log=tmp_path / "serve.log")
    c = lshdb.connect(s.url)
    result = {}
    with lshdb.open(path) as index:
        w = index.writer()
        w.__enter__()  # a writer beside the server holds the lock: the POST below waits
        try:
            seen = sum(x["requests"] for x in s.workers())

            def post():
                result["r"] = httpx.post(s.url + "/items", json={
                    "keys": ["during"], "vectors": [X[500].tolist()]}, timeout=60)

            t = threading.Thread(target=post)
            t.start()
            for _ in range(3000):  # until the worker has the request in hand (a busy
                if sum(x["requests"] for x in s.workers()) >= seen + 2:  # machine: seconds)
                    break
                time.sleep(0.01)
            else:
                pytest.fail("the worker never took the POST in hand")
            s.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)  # the stop has begun; the write still waits for the lock
            assert s.proc.poll() is None
        finally:
            w.__exit__(None, None, None)
        t.join(60)
    assert s.stop() == 0
    assert result["r"].status_code == 200 and result["r"].json() == {"added": 1, "items": 101}
    with lshdb.open(path) as index:
        with index.writer(timeout=0) as w2:  # the lock is free
            w2.add(["after"], X[501:502])
        assert len(index) == 102 and "during" in index
    with pytest.raises(ConnectionError):  # the server is gone
        c.request("GET", "/healthz")


def test_jaccard_index_over_http(tmp_path):
    docs = [f"the quick brown fox number {i} jumps over the lazy dog {i % 7}" for i in
            range(300)]
    path = tmp_path / "docs.lshdb"
    with lshdb.create(path, metric="jaccard", shingle="word:2", store_tokens=True) as index:
        index.add(range(len(docs)), docs)
    s = Server(path, "--workers", 1, log=tmp_path / "serve.log")
    try:
        c = lshdb.connect(s.url)
        with lshdb.open(path, readonly=True) as index:
            assert c.query(docs[3], k=5) == index.query(docs[3], k=5)
            assert c.query(docs[4], k=None, threshold=0.5) == \
                index.query(docs[4], k=None, threshold=0.5)
            assert c.query(["quick", "brown", "fox"], k=3) == \
                index.query(["quick", "brown", "fox"], k=3)
            assert c.query_batch(docs[:4], k=2) == index.query_batch(docs[:4], k=2)
        r = httpx.post(s.url + "/query", json={"text": docs[9], "k": 1}).json()
        assert r == {"results": [{"key": 9, "jaccard": 1.0}]}
        c.add(["new"], ["a brand new document about nothing in particular"])
        assert c.query("a brand new document about nothing in particular", k=1) == \
            [("new", 1.0)]
    finally:
        assert s.stop() == 0


def test_the_core_install_needs_no_serve_extra(monkeypatch, tmp_path):
    out = subprocess.run([sys.executable, "-c", "import lshdb, sys; lshdb.connect('http://x:1');"
                          " print(sorted(m for m in ('starlette', 'uvicorn') if m in sys.modules))"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
    from click.testing import CliRunner

    from lshdb.cli.main import cli

    with lshdb.create(tmp_path / "ix.lshdb", metric="cosine", dim=4):
        pass
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    r = CliRunner().invoke(cli, ["serve", str(tmp_path / "ix.lshdb")])
    assert r.exit_code == 1 and "pip install 'lshdb[serve]'" in r.output


def test_more_workers_than_the_reader_table_holds_is_refused(tmp_path):
    from click.testing import CliRunner

    from lshdb.cli.main import cli

    with lshdb.create(tmp_path / "ix.lshdb", metric="cosine", dim=4):
        pass
    r = CliRunner().invoke(cli, ["serve", str(tmp_path / "ix.lshdb"), "--workers", "300"])
    assert r.exit_code == 1 and "reader slots" in r.output and "fewer workers" in r.output
