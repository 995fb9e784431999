"""Training throughput of the undefended CNN vs the CQ- and TQ-defended ones on this machine.

Times full training steps (forward, loss, backward, Adam step) on MNIST- or
CIFAR-10-shaped batches and prints a table of images/s and TQ's overhead. Run:

    .venv/bin/python benchmarks/train_throughput.py [--dataset mnist] [--steps 60] [--repeats 5]

Each configuration is measured ``--repeats`` times, interleaved, and the median
is reported, so a background load affects all rows alike. On a busy machine,
``--threads 1 --clock cpu`` counts this process's CPU time instead of elapsed time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from torch.nn import functional as F

from models.registry import build_model, dataset_info

DEFENSES = {
    "undefended": {"kind": "none"},
    "cq (L=2)": {"kind": "cq", "levels": 2},
    "tq (L=2)": {"kind": "tq", "levels": 2, "steepness": 10.0},
    "cq (L=4)": {"kind": "cq", "levels": 4},
    "tq (L=4)": {"kind": "tq", "levels": 4, "steepness": 10.0},
    "tq (L=8)": {"kind": "tq", "levels": 8, "steepness": 10.0},
}
# Training images per epoch (the official training sets).
EPOCH_IMAGES = {"mnist": 60_000, "cifar10": 50_000}


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_steps(model, batches, labels, clock=time.perf_counter) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    start = clock()
    for x, y in zip(batches, labels, strict=True):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["mnist", "cifar10"], default="mnist")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60, help="training steps per measurement")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time, which other load on the "
        "machine barely moves (use it with --threads 1 on a shared machine)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info = dataset_info(args.dataset)
    batches = [torch.rand(args.batch_size, *info.input_shape) for _ in range(args.steps)]
    labels = [torch.randint(0, 10, (args.batch_size,)) for _ in range(args.steps)]
    models = {
        name: build_model("cleverhans-basic-cnn", info.input_shape, 10, spec)
        for name, spec in DEFENSES.items()
    }
    for model in models.values():  # warm-up: allocator and kernel selection
        time_steps(model, batches[:5], labels[:5])
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            seconds[name].append(time_steps(model, batches, labels, CLOCKS[args.clock]))

    images = args.steps * args.batch_size
    base = statistics.median(seconds["undefended"])
    print(
        f"# training throughput, {args.dataset}, batch {args.batch_size}, {args.steps} steps "
        f"x {args.repeats} repeats, {args.clock} clock, torch {torch.__version__}, "
        f"{args.threads} threads, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    epoch = EPOCH_IMAGES[args.dataset]
    header = ["model", "images/s (median)", "min..max images/s", f"s per {epoch:,}-image epoch"]
    print("| " + " | ".join([*header, "overhead vs undefended"]) + " |")
    print("|---|---|---|---|---|")
    for name, runs in seconds.items():
        median = statistics.median(runs)
        spread = f"{images / max(runs):,.0f}..{images / min(runs):,.0f}"
        print(
            f"| {name} | {images / median:,.0f} | {spread} "
            f"| {epoch / (images / median):.1f} | {100 * (median / base - 1):+.1f}% |"
        )


if __name__ == "__main__":
    main()
