"""Fixtures for the service tests: tiny random-weight checkpoints and apps built on them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings
from tests.service.helpers.admin import admin_factory
from tests.service.helpers.checkpoints import wait_ready, write_checkpoint
from tests.service.helpers.images import TEST_BODY_LIMIT
from tests.service.helpers.postgres import EmbeddedPostgres, fresh_database, postgres_server


@pytest.fixture(scope="module", autouse=True)
def _few_torch_threads() -> Iterator[None]:
    # The machine is shared with training jobs; one intra-op thread keeps tests predictable.
    # Restored afterwards, so other packages' tests in the same run keep their setting.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_ambient_service_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("QUSEC_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three tiny checkpoints: TQ (the default), undefended, and a 3-channel CQ model."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "mnist-tq2": write_checkpoint(
            root / "mnist-tq2", {"kind": "tq", "levels": 2, "thresholds": [0.4]}
        ),
        "mnist-undefended": write_checkpoint(root / "mnist-undefended", {"kind": "none"}, seed=1),
        "cifar-cq3": write_checkpoint(
            root / "cifar-cq3", {"kind": "cq", "levels": 3}, (3, 32, 32), "cifar10", seed=2
        ),
    }


@pytest.fixture
def make_settings(checkpoints: dict[str, Path]) -> Callable[..., ServiceSettings]:
    def build(**overrides) -> ServiceSettings:
        values = {
            "checkpoints": [checkpoints["mnist-tq2"], checkpoints["mnist-undefended"]],
            "device": "cpu",
            "torch_threads": 1,
            "decode_threads": 1,
            "max_body_bytes": TEST_BODY_LIMIT,
            "max_batch_size": 8,
            "queue_size": 32,
            # Time limits are what the timeout tests set; elsewhere a loaded machine (tests run
            # in parallel, beside training jobs) must not turn a slow decode of a large
            # legitimate image, or a slow answer, into a refusal.
            "decode_timeout_seconds": 120,
            "request_timeout_seconds": 120,
        }
        values.update(overrides)
        return ServiceSettings(**values)

    return build


@pytest.fixture
def serve(make_settings: Callable[..., ServiceSettings]) -> Iterator[Callable[..., TestClient]]:
    """``serve(**settings)`` -> a ready in-process client; all are closed after the test."""
    opened: list[TestClient] = []

    def start(**overrides) -> TestClient:
        client = TestClient(create_app(make_settings(**overrides)))
        client.__enter__()
        opened.append(client)
        wait_ready(client)
        return client

    yield start
    for client in reversed(opened):
        client.__exit__(None, None, None)


@pytest.fixture
def client(serve: Callable[..., TestClient]) -> TestClient:
    return serve()


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    """A throwaway PostgreSQL server for the session (tests/service/helpers/postgres.py).
    Tests that stop it start their own (``postgres_server``)."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: EmbeddedPostgres) -> str:
    """A fresh database on the session's server, for one test."""
    return fresh_database(postgres.url)


@pytest.fixture
def admin(serve, checkpoints, tmp_path) -> Callable[..., TestClient]:
    """``admin(**settings)``: a ready app with admin access and a fresh job database."""
    return admin_factory(serve, checkpoints, tmp_path)


@pytest.fixture
def queue_only_admin(serve, checkpoints, tmp_path) -> Callable[..., TestClient]:
    """Like ``admin``, but no job ever runs (``robustness_run_jobs=False``: a serving-only
    replica), so a test of what is accepted or refused starts no job process."""
    start = admin_factory(serve, checkpoints, tmp_path)
    return lambda **overrides: start(**{"robustness_run_jobs": False, **overrides})
