"""The physical limit a server of one checkpoint works against: its own batched forward.

Loads the checkpoint, then runs the whole deployed model (quantizer, normalization,
network, softmax) under ``torch.inference_mode`` on batches of ``--batch`` random [0, 1]
rows for ``--seconds``, after a short warm-up, and prints ``{"rows_per_second": ...}``.
No decoding, no HTTP, no queue: what is left when serving costs nothing.
``bench_service.py`` runs it as ``--processes`` copies at once, each with ``--threads``
torch threads, on the cores the servers use, and sums their rates.

    .venv/bin/python benchmarks/forward_limit.py --checkpoint checkpoints/cifar10-resnet20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rows_per_second(checkpoint: Path, batch: int, threads: int, seconds: float) -> float:
    sys.path.insert(0, str(ROOT))
    import torch

    from models.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    loaded = load_checkpoint(checkpoint)
    x = torch.rand(batch, *loaded.manifest.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for _ in range(3):
            torch.softmax(loaded.model(x), dim=1)
        rows, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            torch.softmax(loaded.model(x), dim=1)
            rows += batch
        return rows / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=16, help="rows per forward")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time")
    args = parser.parse_args(argv)
    rate = rows_per_second(args.checkpoint, args.batch, args.threads, args.seconds)
    sys.stdout.write(json.dumps({"rows_per_second": rate}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
