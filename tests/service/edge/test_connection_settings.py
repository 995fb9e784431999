"""The connection and decode-budget settings: safe defaults, read from QUSEC_*, wired to uvicorn."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.edge.clients import ClientLedger, Phase
from service.metrics import ServiceMetrics
from service.server import connection_limits, is_inference, pool_overloaded
from service.settings import ServiceSettings


class _App:
    express = None  # no express routes

    class state:  # noqa: N801 - stands in for app.state
        metrics = ServiceMetrics()
        pool = None


def test_defaults_bound_every_shared_resource() -> None:
    settings = ServiceSettings()
    assert settings.max_connections == 1024 and settings.max_header_bytes == 16 * 1024
    assert settings.max_header_count == 100 and settings.request_header_timeout_seconds == 10
    assert settings.body_min_rate_bytes_per_second == 1024
    assert settings.max_buffered_body_bytes == 256 << 20
    assert settings.decode_processes == 2 and settings.decode_timeout_seconds == 3
    assert settings.max_jpeg_scans == 32
    assert settings.robustness_max_cost == 20_000_000
    assert settings.max_connections_per_client == 256
    assert settings.max_buffered_body_bytes_per_client == 64 << 20
    assert (settings.linger_seconds, settings.linger_max_bytes) == (5, 16 << 20)
    assert (settings.decode_heavy_cost_bytes, settings.decode_heavy_processes) == (8 << 20, 1)
    assert settings.decode_max_cost_bytes_per_client == 256 << 20
    assert settings.anonymous_max_decode_cost_bytes == 64 << 20


def test_settings_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("QUSEC_MAX_CONNECTIONS", "64")
    monkeypatch.setenv("QUSEC_MAX_HEADER_BYTES", "8192")
    monkeypatch.setenv("QUSEC_DECODE_TIMEOUT_SECONDS", "0.5")
    monkeypatch.setenv("QUSEC_MAX_CONNECTIONS_PER_CLIENT", "8")
    monkeypatch.setenv("QUSEC_LINGER_SECONDS", "2")
    settings = ServiceSettings()
    limits = connection_limits(settings, _App)
    assert (limits.max_connections, limits.max_header_bytes) == (64, 8192)
    assert (limits.max_connections_per_client, limits.linger_seconds) == (8, 2)
    assert settings.decode_timeout_seconds == 0.5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("QUSEC_MAX_HEADER_BYTES", "100"),
        ("QUSEC_MAX_CONNECTIONS", "0"),
        ("QUSEC_DECODE_MAX_MEMORY_BYTES", "1024"),
        ("QUSEC_REQUEST_HEADER_TIMEOUT_SECONDS", "0"),
        ("QUSEC_MAX_CONNECTIONS_PER_CLIENT", "-1"),
        ("QUSEC_LINGER_SECONDS", "0"),
        ("QUSEC_DECODE_HEAVY_PROCESSES", "2"),  # all of the default 2: none left for light ones
    ],
)
def test_unsafe_values_are_refused(monkeypatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        ServiceSettings()


def test_only_inference_routes_are_shed() -> None:
    assert is_inference(b"/classify") and is_inference(b"/classify?model=a")
    assert is_inference(b"/v2/models/mnist-tq2/infer")
    assert not is_inference(b"/healthz") and not is_inference(b"/metrics")
    assert not is_inference(b"/robustness-check")
    assert not pool_overloaded(_App)  # no pool yet: nothing to protect


def test_the_ledger_picks_the_connection_of_the_client_holding_the_most() -> None:
    ledger = ClientLedger()
    hog = [_Holder("10.0.0.9", Phase.READING_BODY, since) for since in range(5)]
    neighbour = _Holder("10.0.0.2", Phase.IDLE, 0.0)
    for holder in [*hog, neighbour]:
        ledger.opened(holder)
    newcomer = _Holder("10.0.0.3", None, 9.0)
    ledger.opened(newcomer)
    assert ledger.choose_victim(newcomer) is hog[0]  # the hog's oldest upload, not the idle one
    # The hog's own newcomer is refused rather than given one of the hog's uploads...
    hogs_newcomer = _Holder("10.0.0.9", None, 9.0)
    ledger.opened(hogs_newcomer)
    assert ledger.choose_victim(hogs_newcomer) is None
    # ...but an idle connection of its own gives way for it.
    hog[3].current = Phase.IDLE
    assert ledger.choose_victim(hogs_newcomer) is hog[3]
    for holder in [*hog, neighbour, newcomer, hogs_newcomer]:
        ledger.closed(holder)
    assert ledger.count("10.0.0.9") == 0


class _Holder:
    def __init__(self, client: str, phase: Phase | None, since: float) -> None:
        self.client_address, self.current, self.idle_since = client, phase, since

    def phase(self) -> Phase | None:
        return self.current
