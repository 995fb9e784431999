"""Training throughput with adversarial training, against standard training, on this machine.

Times full training steps (inner attack through BPDA where a quantizer is in front, forward,
loss, backward, Adam step) on MNIST- or CIFAR-10-shaped batches and prints a table. Run:

    .venv/bin/python benchmarks/adversarial_throughput.py [--dataset cifar10] \
        [--architecture resnet20] [--defense tq] [--steps 10] [--repeats 3] [--threads 1]

Each configuration is measured ``--repeats`` times, interleaved, and the median is reported.
On a busy machine, ``--threads 1 --clock cpu`` counts this process's CPU time instead.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from torch.nn import functional as F

from models.registry import ARCHITECTURES, build_model, dataset_info
from training.adversarial import AdversarialSettings, adversarial_loss

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
EPOCH_IMAGES = {"mnist": 60_000, "cifar10": 50_000}
RADIUS = {"mnist": 0.3, "cifar10": 8 / 255}


def methods(epsilon: float, pgd_steps: int) -> dict[str, AdversarialSettings | None]:
    return {
        "standard": None,
        "fgsm-rs": AdversarialSettings("fgsm-rs", epsilon, 1, 1.25 * epsilon),
        f"pgd-{pgd_steps}": AdversarialSettings(
            "pgd", epsilon, pgd_steps, 2.5 * epsilon / pgd_steps
        ),
        f"trades-{pgd_steps}": AdversarialSettings(
            "trades", epsilon, pgd_steps, 2.5 * epsilon / pgd_steps
        ),
    }


def time_steps(model, settings, batches, labels, clock) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    start = clock()
    for x, y in zip(batches, labels, strict=True):
        if settings is None:
            loss = F.cross_entropy(model(x), y)
        else:
            loss, _ = adversarial_loss(settings, model, model, x, y, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(EPOCH_IMAGES), default="mnist")
    parser.add_argument(
        "--architecture", choices=sorted(ARCHITECTURES), default="cleverhans-basic-cnn"
    )
    parser.add_argument("--defense", choices=["none", "cq", "tq"], default="none")
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--pgd-steps", type=int, default=10, help="PGD and TRADES inner steps")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="training steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info = dataset_info(args.dataset)
    spec = {"kind": args.defense}
    if args.defense != "none":
        spec["levels"] = args.levels
    model = build_model(args.architecture, info.input_shape, 10, spec)
    batches = [torch.rand(args.batch_size, *info.input_shape) for _ in range(args.steps)]
    labels = [torch.randint(0, 10, (args.batch_size,)) for _ in range(args.steps)]
    table = methods(RADIUS[args.dataset], args.pgd_steps)
    for settings in table.values():  # warm-up: allocator and kernel selection
        time_steps(model, settings, batches[:2], labels[:2], time.perf_counter)
    seconds: dict[str, list[float]] = {name: [] for name in table}
    for _ in range(args.repeats):
        for name, settings in table.items():
            seconds[name].append(time_steps(model, settings, batches, labels, CLOCKS[args.clock]))
    images = args.steps * args.batch_size
    epoch = EPOCH_IMAGES[args.dataset]
    print(
        f"# adversarial training throughput, {args.dataset}, {args.architecture}, defense "
        f"{args.defense}, batch {args.batch_size}, {args.steps} steps x {args.repeats} repeats, "
        f"{args.clock} clock, torch {torch.__version__}, {args.threads} threads, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    base = statistics.median(seconds["standard"])
    print(f"| method | images/s (median) | min per {epoch:,}-image epoch | cost vs standard |")
    print("|---|---|---|---|")
    for name, runs in seconds.items():
        median = statistics.median(runs)
        print(
            f"| {name} | {images / median:,.0f} | {epoch / (images / median) / 60:.1f} "
            f"| {median / base:.1f}x |"
        )


if __name__ == "__main__":
    main()
