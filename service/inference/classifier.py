"""One loaded checkpoint as a pipeline of named stages.

    identify -> decode -> quantize -> batch -> predict -> encode

The stages never see HTTP: a route reads the body (``service.edge.body``) and hands
the bytes over as an ``Upload``. ``identify`` takes the format from the bytes and checks
the header's dimensions; ``decode`` decodes and normalises the image
(``service.sanitize.imaging``); ``quantize`` applies the checkpoint's own quantizer as the
hard staircase with its learned thresholds; ``batch`` hands the quantized rows to
the micro-batcher, whose worker thread calls ``predict`` (the CNN) on whole
batches; ``encode`` turns one row of probabilities into the response. Decode and
quantize run together: in the decode workers, or, for a small image, on the event loop
as its batch is formed, beside the other small images of the batch (``_prepare``).
"""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from models.checkpoint import LoadedCheckpoint
from models.quantizers import InputQuantizer, StaircaseTable
from robustness.png import encode_png, png_base64
from service.errors import DecodeCostTooHigh, InferenceTimeout
from service.inference.batching import MicroBatcher
from service.inference.fit import fit_warnings
from service.inference.freezing import serving_network
from service.inference.tally import Tally
from service.logs import current_request_id
from service.metrics import ServiceMetrics
from service.sanitize.decode_cost import estimate as estimate_decode_cost
from service.sanitize.decode_workers import DecodeWorkers
from service.sanitize.imaging import (
    DecodedImage,
    ImagePolicy,
    OpenedImage,
    finish_decode,
    open_image,
)
from service.sanitize.integrity import check_size
from service.sanitize.upload import Upload
from service.settings import ServiceSettings

# Inline decoding limits (see Classifier._prepare): a 4 KiB body can inflate to a few
# megabytes of PNG text chunks at most, and 128 x 128 pixels decode in well under 1 ms.
INLINE_DECODE_MAX_BYTES = 4096
INLINE_DECODE_MAX_PIXELS = 128 * 128


@dataclass(frozen=True)
class Prepared:
    """An upload after decode and quantize, ready to batch."""

    decoded: DecodedImage
    quantized: torch.Tensor  # (1, C, H, W) on the CPU
    decode_seconds: float
    quantize_seconds: float


class Classifier:
    def __init__(
        self,
        loaded: LoadedCheckpoint,
        device: torch.device,
        settings: ServiceSettings,
        decode_pool: Executor,
        metrics: ServiceMetrics,
        decode_workers: DecodeWorkers,
    ) -> None:
        self.manifest = loaded.manifest
        self.name = loaded.manifest.name or loaded.path.name
        self.path = loaded.path
        self.model = loaded.model
        self.device = device
        self.input_shape = tuple(loaded.manifest.input_shape)
        self.class_names = list(loaded.manifest.class_names)
        self.settings = settings
        self.metrics = metrics
        self._decode_pool = decode_pool
        self._decode_workers = decode_workers
        self.policy = ImagePolicy(
            input_shape=self.input_shape,
            max_pixels=settings.max_image_pixels,
            max_side=settings.max_image_side,
            resize_policy=settings.resize_policy,
            background=settings.background,
            max_jpeg_scans=settings.max_jpeg_scans,
        )
        # Fixed at load: the model is in eval mode and never trained here, and TQ derives
        # its thresholds through a softmax that would otherwise run on every request.
        self._staircase = _staircase(loaded.model.quantizer)
        # What predict runs: everything after the quantizer, batch norms folded and the
        # whole frozen into one graph where that gives the same logits
        # (service/inference/freezing.py).
        self._network = serving_network(
            loaded.model.cnn, self.input_shape, self.name, device, settings.max_batch_size
        )
        self.batcher = MicroBatcher(
            self.name,
            lambda batch: self.predict(batch),  # looked up per call, so tests can patch it
            max_batch_size=settings.max_batch_size,
            max_wait_seconds=settings.max_batch_wait_seconds,
            queue_size=settings.queue_size,
            torch_threads=settings.torch_threads,
            metrics=metrics,
            upstream=lambda: self.upstream.count,
        )
        self.upstream = Tally()  # requests read or decoding, not yet queued for the batcher
        # Parts of every answer that never change (copied into each: callers may add keys).
        self._brief = self.describe_briefly()
        self._defence = self.defence

    @property
    def defence(self) -> dict[str, Any]:
        spec = self.manifest.quantizer
        return {
            "kind": spec.get("kind", "none"),
            "levels": spec.get("levels"),
            "thresholds": list(spec.get("thresholds", [])),
        }

    # --- stages -------------------------------------------------------------------------

    def identify(self, data: bytes) -> OpenedImage:
        """Format from the signature, dimensions from the header; no pixels yet."""
        return open_image(data, self.policy)

    def decode(self, opened: OpenedImage) -> DecodedImage:
        """First frame, orientation, channels, size: the model's input in [0, 1]."""
        return finish_decode(opened, self.policy)

    def quantize(self, rows: torch.Tensor) -> torch.Tensor:
        """(n, C, H, W) in [0, 1] -> the staircase output the CNN sees."""
        if self._staircase is None:
            return rows
        return torch.from_numpy(self._staircase(rows.numpy()))

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """Quantized (N, C, H, W) -> probabilities (N, K) on the CPU; runs on the worker thread."""
        with torch.inference_mode():
            logits = self._network(batch.to(self.device))
            return torch.softmax(logits.float(), dim=1).cpu()

    def encode(
        self,
        probabilities: torch.Tensor,
        prepared: Prepared,
        include_quantized: bool,
        include_input: bool = False,
    ) -> dict[str, Any]:
        values = probabilities.tolist()
        if not all(map(math.isfinite, values)):  # a 500, as JSON has no NaN to answer with
            raise RuntimeError(f"model {self.name} returned probabilities {values}")
        label = values.index(max(values))  # the first of equal largest, as torch.argmax
        body: dict[str, Any] = {
            "request_id": current_request_id(),
            "label": label,
            "class_name": self.class_names[label],
            "probabilities": dict(zip(self.class_names, values, strict=True)),
            "model": dict(self._brief),
            "defence": dict(self._defence),
            "input": prepared.decoded.facts,
            "warnings": fit_warnings(prepared.decoded.facts, self.input_shape, self.name),
        }
        if include_input:
            body["input_image"] = _png_field(prepared.decoded.pixels)
        if include_quantized:
            body["quantized_image"] = _png_field(prepared.quantized[0].numpy())
        return body

    # --- the pipeline -------------------------------------------------------------------

    def prepare(self, data: bytes) -> Prepared:
        """decode + quantize, timed separately."""
        started = time.perf_counter()
        return self._finish(self.identify(data), started)

    async def _prepare(self, upload: Upload) -> Prepared | _InlineDecode:
        """Small images are decoded on the event loop, the rest in the decode workers.

        An MNIST-sized PNG decodes in tens of microseconds, less than handing it to a
        process and back costs. Only a small body whose header claims few pixels stays
        inline, so no upload can hold the event loop for more than about a millisecond;
        everything else is decoded within the decode budget (``service.sanitize.decode_workers``),
        in the lane its estimated cost puts it in. A small image is identified here (its
        header refused at once) and decoded when its batch is formed (``_InlineDecode``).
        """
        started = time.perf_counter()
        data = upload.data
        if len(data) <= INLINE_DECODE_MAX_BYTES:
            opened = self.identify(data)
            if opened.pixel_count <= INLINE_DECODE_MAX_PIXELS:
                return _InlineDecode(self, opened, time.perf_counter() - started)
        cost = self.decode_cost(upload)
        decoded = await self._decode_workers.decode(data, self.policy, cost, upload.client)
        decoded_at = time.perf_counter()
        quantized = self.quantize(torch.from_numpy(decoded.pixels)[None])
        return Prepared(decoded, quantized, decoded_at - started, time.perf_counter() - decoded_at)

    def decode_cost(self, upload: Upload) -> int:
        """The upload's estimated decode cost, from its header; 413 over the anonymous
        ceiling (or the size limits). A header the estimate cannot read, or a JPEG over the
        scan cap, counts as heavy: the decode worker's checks refuse it with the precise
        reason."""
        estimated = estimate_decode_cost(upload.data)
        if estimated is None or estimated.scans > self.policy.max_jpeg_scans:
            # The worker refuses it, before any pixel, with the exact reason.
            return self.settings.decode_heavy_cost_bytes
        check_size(estimated.format, estimated.width, estimated.height, self.policy.limits)
        ceiling = self.settings.anonymous_max_decode_cost_bytes
        if upload.anonymous and estimated.bytes > ceiling:
            raise DecodeCostTooHigh(
                f"{estimated.detail}: estimated {estimated.bytes} bytes, over {ceiling}",
                message="decoding the image would cost more than a request without the admin "
                f"token may ask for ({estimated.bytes} of at most {ceiling} bytes of samples)",
            )
        return estimated.bytes

    def _finish(self, opened: OpenedImage, started: float) -> Prepared:
        decoded = self.decode(opened)
        decoded_at = time.perf_counter()
        quantized = self.quantize(torch.from_numpy(decoded.pixels[None]))
        return Prepared(decoded, quantized, decoded_at - started, time.perf_counter() - decoded_at)

    async def classify(
        self, upload: Upload, include_quantized: bool = False, include_input: bool = False
    ) -> dict[str, Any]:
        """The whole path for one upload whose body has been read and admitted."""
        started = time.perf_counter() - upload.read_seconds
        return await self._classify_upload(upload, started, include_quantized, include_input)

    async def _classify_upload(
        self, upload: Upload, started: float, include_quantized: bool, include_input: bool
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        self.metrics.observe_body(len(upload.data))
        async with self._deadline(loop.time() + self.settings.request_timeout_seconds):
            with self.upstream_slot():
                work = await self._prepare(upload)
            if type(work) is _InlineDecode:
                result = await self.batcher.submit(work)
                prepared = work.prepared
                assert prepared is not None  # made before the forward that answered
            else:
                prepared = work
                result = await self.batcher.submit(prepared.quantized)
        encode_started = time.perf_counter()
        body = self.encode(result.outputs[0], prepared, include_quantized, include_input)
        body["input"] = {**body["input"], "declared_type": upload.declared_type, "via": upload.via}
        timings = {
            "read": upload.read_seconds,
            "decode": prepared.decode_seconds,
            "quantize": prepared.quantize_seconds,
            "queue_wait": result.queue_wait_seconds,
            "inference": result.inference_seconds,
            "encode": time.perf_counter() - encode_started,
        }
        self.metrics.observe_stages(timings)
        body["batch_rows"] = result.batch_rows
        body["timings_seconds"] = {**timings, "total": time.perf_counter() - started}
        return body

    async def infer(self, rows: torch.Tensor) -> torch.Tensor:
        """Tensor path (Open Inference Protocol): quantize -> batch -> predict."""
        loop = asyncio.get_running_loop()
        async with self._deadline(loop.time() + self.settings.request_timeout_seconds):
            with self.upstream_slot():
                started = time.perf_counter()
                quantized = await loop.run_in_executor(self._decode_pool, self.quantize, rows)
                quantize_seconds = time.perf_counter() - started
            result = await self.batcher.submit(quantized)
        self.metrics.observe_stages(
            {
                "quantize": quantize_seconds,
                "queue_wait": result.queue_wait_seconds,
                "inference": result.inference_seconds,
            }
        )
        return result.outputs

    def upstream_slot(self) -> Tally:
        """Count a request as on its way to the batcher, which may wait for it."""
        return self.upstream

    def _deadline(self, when: float) -> _Deadline:
        """``asyncio.timeout_at(when)``, its expiry answered as ``InferenceTimeout``."""
        return _Deadline(self, when)

    async def warm_up(self) -> None:
        """Run the whole path once and a full batch once, so the first request is not slow."""
        blank = encode_png(np.zeros(self.input_shape, dtype=np.float32))
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self._decode_pool, self.prepare, blank)
        await self.batcher.submit(prepared.quantized)
        await self.batcher.submit(torch.zeros(self.settings.max_batch_size, *self.input_shape))

    # --- descriptions -------------------------------------------------------------------

    def describe_briefly(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dataset": self.manifest.dataset,
            "weights_sha256": self.manifest.weights_sha256,
        }

    def describe(self) -> dict[str, Any]:
        """What a client needs to use the model (``GET /models``): no training history,
        no paths of the machine it was trained on."""
        return {
            "name": self.name,
            "dataset": self.manifest.dataset,
            "architecture": self.manifest.architecture,
            "input_shape": list(self.input_shape),
            "class_names": self.class_names,
            "defence": self.defence,
            "weights_sha256": self.manifest.weights_sha256,
            "clean_accuracy": self.manifest.metrics.get("clean_accuracy"),
        }

    def describe_fully(self) -> dict[str, Any]:
        """For the operator (``GET /admin/models``): also the device, the folder it was
        loaded from and the whole manifest."""
        return {
            **self.describe(),
            "device": str(self.device),
            "path": str(self.path),
            "manifest": asdict(self.manifest),
        }


def _png_field(pixels: np.ndarray) -> dict[str, str]:
    """(C, H, W) in [0, 1] as a JSON field: PNG, base64."""
    return {"media_type": "image/png", "encoding": "base64", "data": png_base64(pixels)}


def _staircase(quantizer: InputQuantizer | None) -> StaircaseTable | None:
    """The checkpoint's hard staircase, read once: quantizing runs per request on the CPU."""
    return None if quantizer is None else StaircaseTable(quantizer.thresholds)


class _InlineDecode:
    """A small upload, identified, decoded and quantized on the event loop when its batch
    is formed (``MicroBatcher``'s ``Deferred``); ``prepared`` once it has been."""

    __slots__ = ("classifier", "opened", "identify_seconds", "prepared")
    count = 1

    def __init__(self, classifier: Classifier, opened: OpenedImage, identify_seconds: float):
        self.classifier = classifier
        self.opened = opened
        self.identify_seconds = identify_seconds  # counted in the decode stage
        self.prepared: Prepared | None = None

    def rows(self) -> torch.Tensor:
        started = time.perf_counter() - self.identify_seconds
        self.prepared = self.classifier._finish(self.opened, started)
        return self.prepared.quantized


class _Deadline:
    """``Classifier._deadline``: a class, not a generator-based context manager, as it is
    entered once per request on the event loop."""

    __slots__ = ("classifier", "timeout")

    def __init__(self, classifier: Classifier, when: float) -> None:
        self.classifier = classifier
        self.timeout = asyncio.timeout_at(when)

    async def __aenter__(self) -> None:
        await self.timeout.__aenter__()

    async def __aexit__(self, kind: type[BaseException] | None, exc: Any, tb: Any) -> None:
        try:
            await self.timeout.__aexit__(kind, exc, tb)
        except TimeoutError:  # it expired (the cancellation it caused became this)
            raise self._timed_out() from None
        if kind is not None and issubclass(kind, TimeoutError):
            raise self._timed_out() from None

    def _timed_out(self) -> InferenceTimeout:
        classifier = self.classifier
        return InferenceTimeout(
            f"{classifier.name}: no result within {classifier.settings.request_timeout_seconds} s"
        )
