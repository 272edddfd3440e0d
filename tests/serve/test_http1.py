"""The client's HTTP/1.1 connection against a loopback socket that answers as a reverse
proxy might: chunked bodies, interim answers, bodies up to the close, answers cut short."""

from __future__ import annotations

import socket
import threading

import pytest

from lshdb.serve.http1 import Connection, ProtocolError


class Canned:
    """A loopback server that reads each request whole and sends the next canned answer;
    ``None`` closes the connection instead. Every request it saw is kept."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.answers:
            conn, _ = self.listener.accept()
            with conn, conn.makefile("rb") as f:
                while self.answers:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = f.readline()
                        if not line:
                            break
                        head += line
                    if not head:
                        break
                    n = next((int(h.split(b":")[1]) for h in head.split(b"\r\n")
                              if h.lower().startswith(b"content-length")), 0)
                    self.requests.append(head + f.read(n))
                    answer = self.answers.pop(0)
                    if answer is None:
                        break
                    conn.sendall(answer)
                    if b"Connection: close" in answer or b"HTTP/1.0" in answer[:8]:
                        break
        self.listener.close()


def test_keep_alive_content_length_and_chunked_on_one_connection():
    s = Canned([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"4\r\n{\"a\"\r\n3;ext=1\r\n: 1\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n",
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"])
    c = Connection("127.0.0.1", s.port, timeout=10)
    assert c.request("GET", "/a", headers=b"Accept: x\r\n") == (
        200, {"content-length": "5"}, b"hello")
    sock = c.sock
    status, headers, body = c.request("POST", "/b", b'{"q": 1}')
    assert (status, body) == (201, b'{"a": 1}')
    assert c.request("DELETE", "/c", b"{}")[0] == 204
    assert c.sock is sock  # all three on one connection
    s.thread.join(10)
    first, second, third = s.requests
    assert first.startswith(b"GET /a HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: x\r\n" % s.port)
    assert b"Content-Length: 8\r\n\r\n{\"q\": 1}" in second and third.endswith(b"\r\n\r\n{}")


def test_close_delimited_and_connection_close_answers_reopen():
    s = Canned([b"HTTP/1.0 200 OK\r\n\r\nuntil the close",
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes"])
    c = Connection("127.0.0.1", s.port, timeout=10)
    assert c.request("GET", "/")[2] == b"until the close" and c.sock is None
    assert c.request("GET", "/")[2] == b"ok" and c.sock is None
    assert c.request("GET", "/")[2] == b"yes" and c.sock is not None
    c.close()


@pytest.mark.parametrize("answer, message", [
    (None, "before its whole answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "after 5 of its 10 bytes"),
    (b"SSH-2.0-OpenSSH\r\n", "not an HTTP/1.1 answer"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "not a chunk size"),
])
def test_a_broken_answer_is_a_connection_error_and_closes(answer, message):
    s = Canned([answer])
    c = Connection("127.0.0.1", s.port, timeout=10)
    with pytest.raises(ProtocolError, match=message) as err:
        c.request("GET", "/")
    assert isinstance(err.value, ConnectionError) and c.sock is None
