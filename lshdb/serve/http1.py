"""One keep-alive HTTP/1.1 connection on a socket, for the client: a request out; the
answer's status, headers and body back.

It speaks the part of HTTP/1.1 that an lshdb server, or a reverse proxy in front of one,
answers with: bodies by ``Content-Length``, chunked, or up to the close; ``Connection:
close``; TLS through :mod:`ssl`. The standard library's ``http.client`` parses every
answer's headers with the :mod:`email` package, a large part of a client's CPU per small
request (docs/serve.md).
"""

from __future__ import annotations

import socket
import ssl
from typing import BinaryIO

__all__ = ["Connection", "ProtocolError"]

_LINE = 65536  # the longest status or header line read


class ProtocolError(ConnectionError):
    """The answer was not HTTP/1.1, or ended early: the connection cannot be used again."""


class Connection:
    """A connection to ``host:port``, opened at its first request and again after a close."""

    def __init__(self, host: str, port: int | None, https: bool = False,
                 timeout: float | None = None) -> None:
        self.host, self.https, self.timeout = host, https, timeout
        self.port = port or (443 if https else 80)
        default = self.port == (443 if https else 80)
        name = f"[{host}]" if ":" in host else host
        self._host_header = (name if default else f"{name}:{self.port}").encode("idna")
        self.sock: socket.socket | None = None
        self._in: BinaryIO | None = None

    def open(self) -> tuple[socket.socket, BinaryIO]:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.https:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        self.sock, self._in = sock, sock.makefile("rb")
        return self.sock, self._in

    def close(self) -> None:
        if self._in is not None:
            self._in.close()
        if self.sock is not None:
            self.sock.close()
        self.sock = self._in = None

    def request(self, method: str, target: str, body: bytes | None = None,
                headers: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        """Send one request (``headers``: ready ``Name: value\\r\\n`` lines) and read its
        answer: ``(status, headers with lower-case names, body)``."""
        sock, rfile = self.sock, self._in
        if sock is None or rfile is None:
            sock, rfile = self.open()
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n%s" % (
            method.encode("ascii"), target.encode("ascii"), self._host_header, headers)
        if body is not None:
            head += b"Content-Length: %d\r\n" % len(body)
        sock.sendall(head + b"\r\n" + body if body is not None else head + b"\r\n")
        return self._answer(rfile, method)

    # -- the answer ----------------------------------------------------------------------
    def _line(self, rfile: BinaryIO) -> bytes:
        line = rfile.readline(_LINE + 1)
        if not line.endswith(b"\n"):
            self.close()
            raise ProtocolError("the server closed the connection before its whole answer"
                                if len(line) <= _LINE else "an answer line is too long")
        return line

    def _answer(self, rfile: BinaryIO, method: str) -> tuple[int, dict[str, str], bytes]:
        while True:
            version, _, rest = self._line(rfile).partition(b" ")
            status_text = rest[:3]
            if not version.startswith(b"HTTP/1.") or not status_text.isdigit():
                self.close()
                raise ProtocolError(f"not an HTTP/1.1 answer: {version + b' ' + rest!r:.80}")
            status = int(status_text)
            headers: dict[str, str] = {}
            while (line := self._line(rfile)) not in (b"\r\n", b"\n"):
                name, _, value = line.partition(b":")
                headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
            if not 100 <= status < 200:  # an interim answer is followed by the real one
                break
        keep = version != b"HTTP/1.0" and headers.get("connection", "").lower() != "close"
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._chunked(rfile)
        elif "content-length" in headers:
            body = self._exactly(rfile, int(headers["content-length"]))
        else:
            body, keep = rfile.read(), False
        if not keep:
            self.close()
        return status, headers, body

    def _exactly(self, rfile: BinaryIO, n: int) -> bytes:
        data = rfile.read(n)
        if len(data) != n:
            self.close()
            raise ProtocolError(f"the answer ended after {len(data)} of its {n} bytes")
        return data

    def _chunked(self, rfile: BinaryIO) -> bytes:
        parts: list[bytes] = []
        while True:
            line = self._line(rfile)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close()
                raise ProtocolError(f"not a chunk size: {line!r:.80}") from None
            if size == 0:
                while self._line(rfile) not in (b"\r\n", b"\n"):  # trailers
                    pass
                return b"".join(parts)
            parts.append(self._exactly(rfile, size))
            self._line(rfile)  # the CRLF after each chunk
