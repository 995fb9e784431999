"""The loaded models, the shared decode threads, admission control and readiness."""

from __future__ import annotations

import gc
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from models.checkpoint import load_checkpoint
from models.memory import keep_freed_memory
from service.edge.body import BodyBudget
from service.errors import NotReady, Overloaded, UnknownModel
from service.inference.classifier import Classifier
from service.inference.tally import Tally
from service.metrics import ServiceMetrics
from service.sanitize.decode_workers import DecodeWorkers
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

# Allocations (net of frees) between collections of the youngest generation, once serving
# (CPython's default: 700). 50,000 served 3-11% more requests a second in four alternating
# pairs of runs (docs/service.md, "Fewer garbage collections"); cyclic garbage waits a
# little longer to be freed, a few megabytes at most.
GC_YOUNG_THRESHOLD = 50_000


class StartupError(RuntimeError):
    """The configuration cannot be served (no checkpoints, duplicate names, no GPU...)."""


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise StartupError("QUSEC_DEVICE=cuda but torch sees no CUDA device")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


class ClassifierPool:
    def __init__(self, settings: ServiceSettings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.classifiers: dict[str, Classifier] = {}
        self.default_name: str | None = None
        self.ready = False
        self.failure: str | None = None  # why warm-up failed; liveness reports it
        self.in_flight = Tally()  # inference requests admitted and not yet answered
        metrics.track_in_flight(lambda: self.in_flight.count)
        self.body_budget = BodyBudget(
            settings.max_buffered_body_bytes, settings.max_buffered_body_bytes_per_client
        )
        self.decode_pool = ThreadPoolExecutor(
            max_workers=settings.decode_threads, thread_name_prefix="decode"
        )
        self.decode_workers = DecodeWorkers(
            settings.decode_processes,
            settings.decode_timeout_seconds,
            settings.decode_max_memory_bytes,
            settings.decode_recycle_rss_bytes,
            heavy_cost=settings.decode_heavy_cost_bytes,
            heavy_processes=settings.decode_heavy_processes,
            heavy_nice=settings.decode_heavy_nice,
            max_cost_per_client=settings.decode_max_cost_bytes_per_client,
        )

    def load(self) -> None:
        """Load and verify every checkpoint; any failure stops startup with the reason."""
        if not self.settings.checkpoints:
            raise StartupError("no checkpoints configured: pass --checkpoint or QUSEC_CHECKPOINTS")
        device = resolve_device(self.settings.device)
        keep_freed_memory()  # before any forward: see models.memory
        for folder in self.settings.checkpoints:
            loaded = load_checkpoint(folder, device)
            classifier = Classifier(
                loaded, device, self.settings, self.decode_pool, self.metrics, self.decode_workers
            )
            if classifier.name in self.classifiers:
                raise StartupError(f"two checkpoints are named {classifier.name!r}")
            self.classifiers[classifier.name] = classifier
            self._publish_info(classifier)
            log.info(
                "loaded model %s",
                classifier.name,
                extra={"model": classifier.name, "path": str(folder), "device": str(device)},
            )
        wanted = self.settings.default_model or next(iter(self.classifiers))
        if wanted not in self.classifiers:
            raise StartupError(
                f"default model {wanted!r} is not loaded; loaded: {', '.join(self.classifiers)}"
            )
        self.default_name = wanted

    def start(self) -> None:
        for classifier in self.classifiers.values():
            classifier.batcher.start()

    async def warm_up(self, started_at: float) -> None:
        """Warm every model, then declare readiness; a failure is recorded, logged, never ready."""
        try:
            for classifier in self.classifiers.values():
                await classifier.warm_up()
        except Exception as exc:
            self.failure = f"warm-up failed: {type(exc).__name__}"
            log.error("warm-up failed; the service will stay unready", exc_info=exc)
            return
        # torch and friends leave ~200k long-lived objects; a full collection walking
        # them stalls every request for ~50 ms. Frozen objects are never walked again.
        gc.collect()
        gc.freeze()
        # A request allocates many short-lived objects, freed as soon as it is answered; at
        # the default threshold the youngest generation is collected over and over.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        self.ready = True
        elapsed = time.perf_counter() - started_at
        self.metrics.ready.set(1)
        self.metrics.startup_duration.set(elapsed)
        log.info("ready", extra={"models": list(self.classifiers), "startup_seconds": elapsed})

    async def stop(self) -> None:
        self.ready = False
        self.metrics.ready.set(0)
        for classifier in self.classifiers.values():
            await classifier.batcher.stop()
        self.decode_pool.shutdown(wait=True)
        await self.decode_workers.stop()

    def get(self, name: str | None) -> Classifier:
        """The named model (default when ``None``), once the pool is ready to serve it."""
        if not self.ready:
            raise NotReady("models are still loading or warming up")
        return self.lookup(name)

    def lookup(self, name: str | None) -> Classifier:
        """The named model (default when ``None``), ready or not."""
        key = name or self.default_name
        try:
            return self.classifiers[key]  # type: ignore[index]
        except KeyError:
            loaded = ", ".join(self.classifiers)
            raise UnknownModel(
                f"model {name!r} requested; loaded: {loaded}",
                message=f"no model named {str(key)[:64]!r} is loaded; loaded: {loaded}",
            ) from None

    def check_capacity(self) -> None:
        """Refuse at once when every in-flight slot is taken (before reading a body)."""
        if self.in_flight.count >= self.settings.max_in_flight:
            raise Overloaded(f"{self.in_flight.count} requests in flight")

    def admit(self) -> Tally:
        """Hold an in-flight slot for one inference request whose body has been read
        (``with``); refuse when none is free."""
        self.check_capacity()
        return self.in_flight

    def _publish_info(self, classifier: Classifier) -> None:
        spec = classifier.manifest.quantizer
        self.metrics.model_info.labels(
            model=classifier.name,
            dataset=classifier.manifest.dataset,
            architecture=classifier.manifest.architecture,
            quantizer=spec.get("kind", "none"),
            levels=str(spec.get("levels", "")),
            weights_sha256=classifier.manifest.weights_sha256,
            device=str(classifier.device),
        ).set(1)
