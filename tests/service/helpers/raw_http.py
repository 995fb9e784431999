"""HTTP/1.1 over raw sockets, for tests that must control every byte and the source address.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a socket bound to
127.0.0.2 or 127.0.0.3 reaches a server listening on 127.0.0.1 as a different client.
"""

from __future__ import annotations

import json
import socket

import httpx

WAIT = 120.0  # the longest any state may take to arrive on a loaded machine


def connect(port: int, source: str = "127.0.0.1", timeout: float = WAIT) -> socket.socket:
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
    )
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], dict]:
    """Status, headers and JSON body of one response."""
    return read_responses(sock, 1)[0]


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], dict]]:
    """``count`` responses in order, however the bytes of pipelined ones arrive."""
    data, responses = b"", []
    while len(responses) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed after {data!r}")
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
        length = int(headers["content-length"])
        while len(data) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        body, data = data[:length], data[length:]
        responses.append((int(lines[0].split()[1]), headers, json.loads(body)))
    return responses


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed the connection (EOF or reset), after any response;
    a socket timeout (the server kept it open) propagates."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def classify_head(length: int, extra: bytes = b"") -> bytes:
    """The head of a raw keep-alive ``POST /classify`` declaring ``length`` body bytes."""
    return (
        (
            b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\n" % length
        )
        + extra
        + b"\r\n"
    )


def client_from(source: str, base_url: str) -> httpx.Client:
    """An httpx client whose connections leave from ``source``."""
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=base_url, transport=transport, timeout=WAIT)
