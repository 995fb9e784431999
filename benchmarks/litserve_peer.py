"""The benchmark's peer: the same checkpoint served by LitServe with dynamic batching.

Only for ``bench_service.py --peer litserve``; needs the benchmark-only extra
(``pip install -e '.[bench]'``, which adds litserve 0.2.19). LitServe reads a
request's body as JSON, so the peer takes ``{"image": "<base64 PNG>"}``: the same
PNG as /classify gets, base64-encoded. Each request is decoded (Pillow, grey or
RGB as the checkpoint's input, resized to it), batched (up to ``--max-batch-size``
rows, waiting at most ``--batch-timeout`` seconds), run through the checkpoint's whole model (its
quantizer, then the CNN) and answered with the label and probabilities.

``--network as-written`` (the default) runs the CNN as a LitServe user would write it: the
checkpoint's model, eager, batch norms in place. ``--network served`` runs the CNN exactly
as QuSec's predict stage does (``service.inference.freezing.serving_network``: batch norms
folded, convolution weights channels-last, frozen), so a comparison can tell the serving
path's share from the forward's.

    .venv/bin/python benchmarks/litserve_peer.py --checkpoint checkpoints/mnist-tq2 --port 8001
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
from pathlib import Path

import litserve as ls
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


class DigitAPI(ls.LitAPI):
    def __init__(self, checkpoint: Path, network: str = "as-written", **kwargs) -> None:
        super().__init__(**kwargs)
        self.checkpoint = checkpoint
        self.network = network

    def setup(self, device: str) -> None:
        sys.path.insert(0, str(ROOT))
        from models.checkpoint import load_checkpoint

        torch.set_num_threads(1)
        loaded = load_checkpoint(self.checkpoint, torch.device("cpu"))
        self.model = loaded.model.eval()
        self.shape = tuple(loaded.manifest.input_shape)
        if self.network == "served":
            from service.inference.freezing import serving_network

            cnn = serving_network(loaded.model.cnn, self.shape, self.checkpoint.name)
            quantize = loaded.model.quantize
            self.model = lambda x: cnn(quantize(x))

    def decode_request(self, request: dict) -> torch.Tensor:
        png = base64.b64decode(request["image"])
        mode = "L" if self.shape[0] == 1 else "RGB"
        image = Image.open(io.BytesIO(png)).convert(mode).resize(self.shape[1:][::-1])
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(pixels))

    def batch(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(self.model(x), dim=1)

    def unbatch(self, output: torch.Tensor) -> list[torch.Tensor]:
        return list(output)

    def encode_response(self, output: torch.Tensor) -> dict:
        return {"label": int(torch.argmax(output)), "probabilities": output.tolist()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout", type=float, default=0.002)
    parser.add_argument(
        "--api-servers", type=int, default=1, help="LitServe's HTTP processes (num_api_servers)"
    )
    parser.add_argument(
        "--network",
        choices=["as-written", "served"],
        default="as-written",
        help="the CNN as a LitServe user writes it, or as QuSec's predict stage runs it",
    )
    args = parser.parse_args(argv)
    api = DigitAPI(
        args.checkpoint,
        args.network,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
    )
    server = ls.LitServer(api, accelerator="cpu", timeout=30)
    server.run(
        host="127.0.0.1",
        port=args.port,
        num_api_servers=args.api_servers,
        log_level="warning",
        generate_client_file=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
