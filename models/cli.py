"""``python -m models ...``: bring a model in without writing code.

``import`` wraps a ``torch.export`` program into a checkpoint folder (docs/models.md);
``architectures`` lists the registered architecture names, built-in and installed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from models.checkpoint import CheckpointError


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not comma-separated numbers such as 0.5,0.5,0.5"
        ) from None


def _shape(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(part) for part in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not C,H,W such as 3,32,32")
    return parts  # type: ignore[return-value]


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(","))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    imp = commands.add_parser(
        "import", help="wrap a torch.export program (.pt2) into a checkpoint folder"
    )
    imp.add_argument("program", type=Path, help="file written by torch.export.save")
    imp.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    imp.add_argument(
        "--input-shape", type=_shape, required=True, help="C,H,W of one image, e.g. 3,32,32"
    )
    imp.add_argument(
        "--class-names",
        type=_names,
        required=True,
        help="comma-separated names, in the order of the program's logits",
    )
    imp.add_argument(
        "--mean",
        type=_floats,
        default=None,
        help="per-channel mean the program expects, applied after the quantizer",
    )
    imp.add_argument("--std", type=_floats, default=None, help="per-channel std (with --mean)")
    imp.add_argument(
        "--defence",
        choices=["none", "cq", "tq"],
        default="none",
        help="quantizer in front of the program (default none)",
    )
    imp.add_argument("--levels", type=int, default=2, help="quantization levels L (default 2)")
    imp.add_argument(
        "--thresholds",
        type=_floats,
        default=None,
        help="L-1 increasing thresholds in (0, 1) (default: uniform)",
    )
    imp.add_argument(
        "--dataset",
        default="custom",
        help="dataset name recorded in the manifest (default custom)",
    )
    imp.add_argument(
        "--eval-folder",
        type=Path,
        default=None,
        help="labelled images (one sub-folder per class, named as in --class-names) kept "
        "in the checkpoint as its evaluation set for robustness checks (default: none)",
    )
    commands.add_parser("architectures", help="list registered architecture names")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "architectures":
        from models.registry import architecture_names

        sys.stdout.write("\n".join(architecture_names()) + "\n")
        return 0
    from datetime import UTC, datetime

    from models.importing import ProgramImport, import_program

    request = ProgramImport(
        program=args.program,
        out=args.out,
        input_shape=args.input_shape,
        class_names=args.class_names,
        mean=args.mean,
        std=args.std,
        defence=args.defence,
        levels=args.levels,
        thresholds=args.thresholds,
        dataset=args.dataset,
        eval_folder=args.eval_folder,
    )
    try:
        manifest = import_program(request, datetime.now(UTC).isoformat(timespec="seconds"))
    except (ValueError, CheckpointError) as exc:
        logging.getLogger("models").error("%s", exc)
        return 2
    sys.stdout.write(
        json.dumps({"out": str(args.out), "program_sha256": manifest.weights_sha256}) + "\n"
    )
    return 0
