"""``python -m service.sanitize.decode_worker``: decode uploads in a process the service can kill.

A fresh interpreter (no torch) that reads requests on stdin and answers on stdout,
one at a time:

    at start: {"ready": true}
    request:  one JSON line {"size": N, "policy": {...}}, then N bytes of the upload
    answer:   one JSON line {"ok": true, "facts": {...}, "shape": [C, H, W], "recycle": b},
              then C*H*W bytes (the model input as 8-bit levels); or
              {"ok": false, "reason": "<code>", "detail": "...", "recycle": b}

Nothing is pickled in either direction: the service parses a JSON line and a byte
count it checks against the model's input shape. The address space is capped
(``--max-memory-bytes``), so a file that would take more fails here with
``decode_budget_exceeded`` instead of growing the service; after a task that left
the process larger than ``--recycle-rss-bytes`` it answers ``recycle`` and exits,
returning the memory to the system.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from typing import BinaryIO

from robustness.png import to_levels
from service.errors import ServiceError
from service.placement import unpin_child
from service.sanitize.imaging import ImagePolicy, decode_image


def serve(stdin: BinaryIO, stdout: BinaryIO, recycle_rss_bytes: int) -> None:
    stdout.write(READY)  # imports are done: the service's deadline starts with each task
    stdout.flush()
    while True:
        line = stdin.readline()
        if not line:
            return  # the service closed the pipe
        request = json.loads(line)
        data = stdin.read(request["size"])
        policy = request["policy"]
        policy["input_shape"] = tuple(policy["input_shape"])
        header, payload = _decode(data, ImagePolicy(**policy))
        header["recycle"] = resident_bytes() > recycle_rss_bytes
        stdout.write(json.dumps(header).encode() + b"\n" + payload)
        stdout.flush()
        if header["recycle"]:
            return


READY = b'{"ready": true}\n'


def _decode(data: bytes, policy: ImagePolicy) -> tuple[dict, bytes]:
    try:
        decoded = decode_image(data, policy)
    except ServiceError as exc:
        return {"ok": False, "reason": exc.reason, "detail": exc.detail}, b""
    except MemoryError:
        return {"ok": False, "reason": "decode_budget_exceeded", "detail": "memory cap"}, b""
    levels = to_levels(decoded.pixels)
    header = {"ok": True, "facts": decoded.facts, "shape": list(levels.shape)}
    return header, levels.tobytes()


def resident_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="decode uploads for the QuSec service")
    parser.add_argument("--max-memory-bytes", type=int, required=True)
    parser.add_argument("--recycle-rss-bytes", type=int, required=True)
    parser.add_argument("--nice", type=int, default=0, help="niceness to add (heavy lane)")
    args = parser.parse_args(argv)
    unpin_child()
    if args.nice:
        os.nice(args.nice)
    resource.setrlimit(resource.RLIMIT_AS, (args.max_memory_bytes, args.max_memory_bytes))
    serve(sys.stdin.buffer, sys.stdout.buffer, args.recycle_rss_bytes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
