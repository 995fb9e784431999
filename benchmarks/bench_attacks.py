"""Attack time per 1,000 images on this machine, for every registered attack.

Each attack runs with its default (documented) parameters through the suite's runner on a
shipped checkpoint (by default the CQ-defended MNIST one; ``--checkpoint`` names another,
e.g. ``checkpoints/cifar10-tq4``), on its dataset's shipped test subset, at the largest
L-inf radius of its dataset's preset and the middle L2 one (MNIST 0.3 and 2; CIFAR-10 8/255
and 0.5): the case the product actually evaluates: gradient
attacks (and the level-space attacks) under BPDA, query attacks under the gradient-free
threat model. Cheap attacks are timed on all the images asked for; expensive ones on a
prefix (``--expensive-samples``) and scaled linearly to 1,000, which the table marks
"(scaled)". Run:

    .venv/bin/python benchmarks/bench_attacks.py [--checkpoint checkpoints/mnist-cq2]
        [--samples 1000] [--expensive-samples 50] [--threads N]

Times depend on the model: SPSA stops early on samples it fools, so an undefended model is
cheaper to attack with it than a defended one.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from models.checkpoint import load_checkpoint
from models.evalset import eval_set_path, load_eval_set
from robustness.attacks import ATTACKS
from robustness.presets import preset
from robustness.request import SuiteRequest
from robustness.runner import Subject, run_suite

EXPENSIVE = (
    "apgd_ce",
    "apgd_ce_l2",
    "level",
    "level_8bit",
    "apgd_t",
    "apgd_t_l2",
    "cw_l2",
    "square",
    "square_l2",
    "spsa",
    "hsj",
)


def radii(dataset: str) -> dict[str, float]:
    radius = preset(dataset)
    return {"linf": radius.epsilons[-1], "l2": radius.l2_epsilons[len(radius.l2_epsilons) // 2]}


def time_attack(target: Subject, data, name: str, samples: int, batch_size: int) -> dict:
    attack = ATTACKS[name]
    threat = "gradient_free" if attack.access in ("queries", "none") else "bpda"
    if threat == "bpda" and target.model.quantizer is None:
        threat = "naive"
    request = SuiteRequest(
        attacks=(name,),
        threat_models=(threat,),
        epsilons=(radii(target.dataset)["linf"],),
        l2_epsilons=(radii(target.dataset)["l2"],),
        samples=samples,
        batch_size=batch_size,
        sanity_epsilon=None,
    )
    start = time.perf_counter()
    report = run_suite(target, data, request)
    wall = time.perf_counter() - start
    row = next(r for r in report["results"] if r["norm"] == attack.norm)
    return {
        "attack": name,
        "threat": threat,
        "radius": "min" if attack.minimal else f"{attack.norm} {row['epsilon']:g}",
        "samples": samples,
        "seconds": row["seconds"],
        "per_1000": row["seconds"] * 1000 / samples,
        "wall": wall,
        "robust_accuracy": row["robust_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/mnist-cq2"))
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--expensive-samples", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(args.checkpoint)
    target = Subject.from_checkpoint(checkpoint)
    data = load_eval_set(eval_set_path(checkpoint.manifest.dataset))
    print(
        f"# {target.name} ({checkpoint.manifest.quantizer.get('kind')}), torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}"
    )
    print(
        f"{'attack':10} {'threat model':14} {'radius':9} {'measured on':>11} "
        f"{'seconds':>8} {'s / 1,000 images':>17} {'robust acc':>10}"
    )
    for name in args.attacks.split(","):
        samples = args.expensive_samples if name in EXPENSIVE else args.samples
        r = time_attack(target, data, name, min(samples, len(data.labels)), args.batch_size)
        scaled = "" if r["samples"] == 1000 else " (scaled)"
        accuracy = f"{100 * r['robust_accuracy']:.1f}%"
        print(
            f"{r['attack']:10} {r['threat']:14} {r['radius']:9} {r['samples']:>11} "
            f"{r['seconds']:8.1f} {r['per_1000']:8.1f}{scaled:9} {accuracy:>10}",
            flush=True,
        )


if __name__ == "__main__":
    main()
