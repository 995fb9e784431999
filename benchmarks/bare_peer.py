"""The benchmark's floor for a Python request path: the barest server that batches.

Only for ``bench_service.py --peer bare``. It answers ``POST`` with a raw PNG body the way
/classify answers it, with nothing a service needs beside the work itself: uvloop and
httptools' parser on the socket, Pillow's decode, the same network as the service's predict
stage (``serving_network``: folded, channels-last, frozen, behind the checkpoint's quantizer),
one inference thread per process that takes every row waiting (up to ``--max-batch``), and a
JSON answer with the label and probabilities. No limits, no sanitizing, no timers, no logs,
no metrics, no error handling beyond closing a connection it cannot parse: not a server to
run, a measurement of what the interpreter's request path costs on these cores, so that the
service's share of the batched-forward limit can be read against what any Python server
could reach here.

``--processes`` copies share one listening socket; each stops accepting once it holds
``--connections-each`` connections, so that the connections are shared out evenly, as the
service's supervisor shares them among its workers.

    .venv/bin/python benchmarks/bare_peer.py --checkpoint checkpoints/cifar10-resnet20 \
        --port 8002 --processes 2 --connections-each 8
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import socket
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"


class Batcher:
    """Rows decoded on the event loop, run by one inference thread as a batch each time it
    is free, answered back on the loop."""

    def __init__(self, checkpoint: Path, max_batch: int) -> None:
        import numpy as np
        import orjson
        import torch

        from models.checkpoint import load_checkpoint
        from models.memory import keep_freed_memory
        from service.inference.freezing import serving_network

        keep_freed_memory()  # as every serving process and forward_limit.py do
        torch.set_num_threads(1)
        loaded = load_checkpoint(checkpoint, torch.device("cpu"))
        self.shape = tuple(loaded.manifest.input_shape)
        network = serving_network(loaded.model.cnn, self.shape, checkpoint.name)
        quantize = loaded.model.quantize
        self.np, self.torch, self.dumps = np, torch, orjson.dumps
        self.forward = lambda x: torch.softmax(network(quantize(x)), dim=1)
        self.max_batch = max_batch
        self.mode = "L" if self.shape[0] == 1 else "RGB"
        self.pending: list[tuple[object, object]] = []
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.loop = asyncio.get_running_loop()
        with torch.inference_mode():
            self.forward(torch.rand(max_batch, *self.shape))  # warm, as the service warms
        threading.Thread(target=self._run, daemon=True).start()

    def submit(self, png: bytes, protocol: BareProtocol) -> None:
        from PIL import Image

        image = Image.open(io.BytesIO(png))
        if image.mode != self.mode:
            image = image.convert(self.mode)
        pixels = self.np.asarray(image, dtype=self.np.float32) * (1.0 / 255.0)
        with self.lock:
            self.pending.append((pixels, protocol))
        self.wake.set()

    def _run(self) -> None:
        np, torch = self.np, self.torch
        while True:
            self.wake.wait()
            with self.lock:
                taken, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
                if not self.pending:
                    self.wake.clear()
            if not taken:
                continue
            rows = np.stack([pixels for pixels, _ in taken])
            rows = rows[:, None] if rows.ndim == 3 else rows.transpose(0, 3, 1, 2)
            with torch.inference_mode():
                probabilities = self.forward(torch.from_numpy(np.ascontiguousarray(rows)))
            labels = probabilities.argmax(dim=1).tolist()
            answers = [
                self.dumps({"label": label, "probabilities": row})
                for label, row in zip(labels, probabilities.tolist(), strict=True)
            ]
            protocols = [protocol for _, protocol in taken]
            self.loop.call_soon_threadsafe(_answer_all, protocols, answers)


def _answer_all(protocols: list, answers: list[bytes]) -> None:
    for protocol, answer in zip(protocols, answers, strict=True):
        protocol.answer(answer)


class BareProtocol(asyncio.Protocol):
    def __init__(self, batcher: Batcher, server: Acceptor) -> None:
        import httptools

        self.batcher, self.server = batcher, server
        self.parser = httptools.HttpRequestParser(self)
        self.chunks: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.server.closed()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception:  # noqa: BLE001 - a floor, not a server: drop what it cannot parse
            if self.transport is not None:
                self.transport.close()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.chunks)
        self.chunks = []
        if self.parser.get_method() != b"POST":
            self.answer(b"ok")  # readiness
            return
        self.batcher.submit(body, self)

    def answer(self, payload: bytes) -> None:
        if self.transport is not None:
            self.transport.write(HEAD % len(payload) + payload)


class Acceptor:
    """Accepts from the shared socket while it holds fewer than ``cap`` connections."""

    def __init__(self, listener: socket.socket, batcher: Batcher, cap: int) -> None:
        self.listener, self.batcher, self.cap = listener, batcher, cap
        self.loop = asyncio.get_running_loop()
        self.open = 0
        self.accepting = False
        self._accept_more()

    def _accept_more(self) -> None:
        if not self.accepting and self.open < self.cap:
            self.loop.add_reader(self.listener, self._accept)
            self.accepting = True

    def _accept(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except BlockingIOError:  # another copy took it
            return
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.open += 1
        if self.open >= self.cap:
            self.loop.remove_reader(self.listener)
            self.accepting = False
        protocol = BareProtocol(self.batcher, self)
        self.loop.create_task(self.loop.connect_accepted_socket(lambda: protocol, connection))

    def closed(self) -> None:
        self.open -= 1
        self._accept_more()


def serve(listener: socket.socket, checkpoint: Path, max_batch: int, cap: int) -> None:
    import uvloop

    async def main() -> None:
        batcher = Batcher(checkpoint, max_batch)
        Acceptor(listener, batcher, cap)
        await asyncio.Event().wait()

    uvloop.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--connections-each", type=int, default=1 << 16)
    parser.add_argument("--max-batch", type=int, default=32)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    listener = socket.create_server(("127.0.0.1", args.port), backlog=1024)
    listener.setblocking(False)
    children = []
    for _ in range(args.processes):
        child = os.fork()
        if child == 0:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            serve(listener, args.checkpoint, args.max_batch, args.connections_each)
            os._exit(0)
        children.append(child)
    try:
        for child in children:
            os.waitpid(child, 0)
    except KeyboardInterrupt:
        for child in children:
            os.kill(child, signal.SIGTERM)
        for child in children:
            os.waitpid(child, 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
