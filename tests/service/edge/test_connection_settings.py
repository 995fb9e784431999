"""The connection and decode-budget settings: safe defaults, read from QUSEC_*, wired to uvicorn."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.metrics import ServiceMetrics
from service.server import connection_limits, is_inference, pool_overloaded
from service.settings import ServiceSettings


class _App:
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


def test_settings_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("QUSEC_MAX_CONNECTIONS", "64")
    monkeypatch.setenv("QUSEC_MAX_HEADER_BYTES", "8192")
    monkeypatch.setenv("QUSEC_DECODE_TIMEOUT_SECONDS", "0.5")
    settings = ServiceSettings()
    limits = connection_limits(settings, _App)
    assert (limits.max_connections, limits.max_header_bytes) == (64, 8192)
    assert settings.decode_timeout_seconds == 0.5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("QUSEC_MAX_HEADER_BYTES", "100"),
        ("QUSEC_MAX_CONNECTIONS", "0"),
        ("QUSEC_DECODE_MAX_MEMORY_BYTES", "1024"),
        ("QUSEC_REQUEST_HEADER_TIMEOUT_SECONDS", "0"),
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
