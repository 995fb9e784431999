"""The physical limit a server of one checkpoint works against: its own batched forward.

Loads the checkpoint, then runs the whole deployed model (quantizer, normalization,
network, softmax) under ``torch.inference_mode`` on batches of random [0, 1] rows, each
batch size of ``--batch`` for its share of ``--seconds`` after a short warm-up, and prints
the best and every size's rate, ``{"rows_per_second": ..., "batch": ..., "rates": {...}}``.
The network runs as the service's predict stage runs it, batch norms folded, convolution
weights channels-last and the whole frozen into one TorchScript graph
(``service/inference/freezing.py``), with the C allocator
keeping freed memory as in a serving process (``models/memory.py``), so the
limit is the fastest forward known here. No decoding, no HTTP, no queue: what is left
when serving costs nothing.
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


def batch_rates(
    checkpoint: Path, batches: list[int], threads: int, seconds: float
) -> dict[int, float]:
    """Rows per second by batch size."""
    sys.path.insert(0, str(ROOT))
    import torch

    from models.checkpoint import load_checkpoint
    from models.memory import keep_freed_memory
    from service.inference.freezing import serving_network

    keep_freed_memory()  # as every serving process does before it loads a model
    torch.set_num_threads(threads)
    loaded = load_checkpoint(checkpoint)
    shape = tuple(loaded.manifest.input_shape)
    network = serving_network(loaded.model.cnn, shape, checkpoint.name)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(network(loaded.model.quantize(x)), dim=1)

    rates: dict[int, float] = {}
    for batch in batches:
        x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            for _ in range(3):
                forward(x)
            rows, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds / len(batches):
                forward(x)
                rows += batch
            rates[batch] = rows / (time.perf_counter() - started)
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument(
        "--batch", default="4,6,8,12,16", help="rows per forward, comma-separated: the best counts"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batch.split(",")]
    rates = batch_rates(args.checkpoint, batches, args.threads, args.seconds)
    batch = max(rates, key=lambda size: rates[size])
    found = {"rows_per_second": rates[batch], "batch": batch, "rates": rates}
    sys.stdout.write(json.dumps(found) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
