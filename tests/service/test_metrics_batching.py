"""Per-request metric updates made on an event loop are applied together a moment later
(``service.metrics.PendingUpdates``), and a scrape shows what updating one by one shows."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import STAGE_BUCKETS, PendingUpdates, ServiceMetrics

# Every bound itself (an observation equal to a bound falls in that bucket), values on
# either side of bounds, zero, a negative value and one beyond the last finite bound.
VALUES = [
    *STAGE_BUCKETS,
    *(b * 0.999 for b in STAGE_BUCKETS),
    *(b * 1.001 for b in STAGE_BUCKETS),
    0.0,
    -0.5,
    99.0,
    0.00003,
]


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def metrics_pair() -> tuple[tuple, tuple]:
    def build() -> tuple:
        registry = CollectorRegistry()
        return (
            registry,
            Histogram("h_seconds", "h", ["stage"], buckets=STAGE_BUCKETS, registry=registry),
            Counter("c", "c", ["status"], registry=registry),
            Gauge("g", "g", registry=registry),
        )

    return build(), build()


def test_updates_applied_together_show_as_updating_one_by_one_shows():
    (direct, h1, c1, g1), (batched, h2, c2, g2) = metrics_pair()
    for value in VALUES:
        h1.labels(stage="decode").observe(value)
        c1.labels(status="200").inc()

    async def updates() -> None:
        pending = PendingUpdates(interval=3600)
        for value in VALUES:
            pending.observe(h2.labels(stage="decode"), value)
            pending.update(increments=[(c2.labels(status="200"), 1)])
            await asyncio.sleep(0)  # one loop turn each
        pending.apply()

    asyncio.run(updates())
    expected, got = samples(direct), samples(batched)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if key[0] == "h_seconds_sum":
            assert got[key] == pytest.approx(value, rel=1e-12)
        else:
            assert got[key] == value, key
    assert got[("h_seconds_count", (("stage", "decode"),))] == len(VALUES)


class CountingValue:
    """A stand-in metric child that counts the writes made to it."""

    def __init__(self) -> None:
        self.writes = 0
        self.value = 0.0

    def inc(self, amount: float) -> None:
        self.writes += 1
        self.value += amount

    def set(self, value: float) -> None:
        self.writes += 1
        self.value = value


class CountingHistogram:
    """A histogram child with prometheus_client's layout whose every write is counted."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._upper_bounds = [*bounds, float("inf")]
        self._buckets = [CountingValue() for _ in self._upper_bounds]
        self._sum = CountingValue()

    def observe(self, value: float) -> None:
        raise AssertionError("a batch of observations is applied per bucket, not one by one")

    def writes(self) -> int:
        return self._sum.writes + sum(b.writes for b in self._buckets)


def test_updates_applied_together_write_each_touched_value_once():
    histogram, counter = CountingHistogram((1.0, 2.0)), CountingValue()

    async def updates() -> None:
        pending = PendingUpdates(interval=3600)
        for i in range(100):
            if i % 3:
                pending.observe(histogram, 0.5 if i % 2 else 1.5)
                pending.update(increments=[(counter, 1)])
            else:  # both at once
                pending.update([(histogram, 0.5 if i % 2 else 1.5)], [(counter, 1)])
            await asyncio.sleep(0)
        assert histogram.writes() == counter.writes == 0  # still pending
        pending.apply()

    asyncio.run(updates())
    # Two buckets and the sum; one increment of the counter.
    assert histogram.writes() == 3
    assert [b.value for b in histogram._buckets] == [50, 50, 0]
    assert histogram._sum.value == pytest.approx(100.0)
    assert (counter.writes, counter.value) == (1, 100)


def test_pending_updates_are_applied_by_the_loop_after_the_interval():
    counter = CountingValue()

    async def updates() -> None:
        pending = PendingUpdates(interval=0.01)
        pending.update(increments=[(counter, 1)])
        pending.update(increments=[(counter, 2)])
        for _ in range(6000):  # a generous limit; it ends as soon as they are applied
            if counter.writes:
                break
            await asyncio.sleep(0.01)
        # The loop goes on: later updates are scheduled again.
        pending.update(increments=[(counter, 4)])
        for _ in range(6000):
            if counter.writes == 2:
                break
            await asyncio.sleep(0.01)

    asyncio.run(updates())
    assert (counter.writes, counter.value) == (2, 7)


def test_updates_off_a_loop_are_applied_at_once():
    registry = CollectorRegistry()
    histogram = Histogram("h", "h", buckets=(1.0,), registry=registry)
    counter = Counter("c", "c", registry=registry)
    pending = PendingUpdates()
    pending.observe(histogram, 0.5)
    pending.update(increments=[(counter, 2)])
    assert registry.get_sample_value("h_count") == 1
    assert registry.get_sample_value("c_total") == 2


def test_a_sampled_gauge_reads_its_value_whenever_updates_are_applied():
    gauge, counter = CountingValue(), CountingValue()
    count = 0

    async def updates() -> None:
        nonlocal count
        pending = PendingUpdates(interval=3600)
        pending.sample(gauge, lambda: count)
        assert (gauge.writes, gauge.value) == (1, 0)  # read once at once
        for _ in range(10):  # a request goes in and out: no write of its own
            count += 1
            count -= 1
        count = 4
        assert gauge.writes == 1
        pending.update(increments=[(counter, 1)])
        pending.apply()
        assert gauge.value == 4
        count = 0
        pending.apply()  # every application reads it, pending updates or not

    asyncio.run(updates())
    assert (gauge.writes, gauge.value) == (3, 0)


def test_a_nan_observation_is_observed_as_prometheus_client_observes_it():
    (direct, h1, _, _), (batched, h2, _, _) = metrics_pair()
    h1.labels(stage="x").observe(0.5)
    h1.labels(stage="x").observe(float("nan"))

    async def updates() -> None:
        pending = PendingUpdates()
        pending.observe(h2.labels(stage="x"), 0.5)
        pending.observe(h2.labels(stage="x"), float("nan"))
        pending.apply()

    asyncio.run(updates())
    assert repr(samples(batched)) == repr(samples(direct))  # NaN sums compare by text


def test_a_scrape_shows_its_own_processs_pending_updates():
    metrics = ServiceMetrics()

    async def scrape_at_once() -> str:
        metrics.observe_request("/classify", "POST", 200, 0.004)
        metrics.observe_stages({"decode": 0.0002, "inference": 0.003})
        metrics.observe_body(1234)
        metrics.track_in_flight(lambda: 3)
        metrics.observe_batch("m", 7)
        metrics.track_queue_depth("m", lambda: 2)
        return metrics.exposition().decode()

    text = asyncio.run(scrape_at_once())
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    answered = (("endpoint", "/classify"), ("method", "POST"), ("status", "200"))
    assert found[("qusec_http_requests_total", answered)] == 1
    assert found[("qusec_http_request_duration_seconds_count", (("endpoint", "/classify"),))] == 1
    assert found[("qusec_stage_duration_seconds_count", (("stage", "decode"),))] == 1
    assert found[("qusec_stage_duration_seconds_count", (("stage", "inference"),))] == 1
    assert found[("qusec_request_body_bytes_sum", ())] == 1234
    assert found[("qusec_in_flight_requests", ())] == 3
    assert found[("qusec_batch_size_sum", (("model", "m"),))] == 7
    assert found[("qusec_queue_depth", (("model", "m"),))] == 2
