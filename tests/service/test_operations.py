"""Health, readiness, models, metrics, request ids, load shedding, timeouts, startup."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from fastapi.testclient import TestClient

from models.checkpoint import CheckpointError
from service.app import create_app
from service.errors import REJECTION_REASONS
from service.inference.classifier import Classifier
from service.inference.pool import GC_YOUNG_THRESHOLD
from service.metrics import STAGES
from tests.service.helpers.checkpoints import wait_ready
from tests.service.helpers.images import digit, encode

PNG = encode(digit(), "PNG")


def test_liveness_and_readiness(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {
        "status": "ready",
        "models": ["mnist-tq2", "mnist-undefended"],
    }


def test_a_ready_service_has_frozen_its_startup_objects_and_collects_less_often(client):
    """Warm-up freezes what startup left (never walked again) and raises the youngest
    generation's threshold (``service.inference.pool``); gc's state is the process's."""
    assert client.get("/readyz").json()["status"] == "ready"
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD > 700


def test_models_lists_what_a_client_needs(client) -> None:
    body = client.get("/models").json()
    assert body["default"] == "mnist-tq2" and body["ready"] is True
    tq = body["models"][0]
    assert set(tq) == {
        "name",
        "dataset",
        "architecture",
        "input_shape",
        "class_names",
        "defence",
        "weights_sha256",
        "clean_accuracy",
    }
    assert tq["defence"]["kind"] == "tq" and tq["defence"]["thresholds"] == pytest.approx([0.4])
    assert tq["input_shape"] == [1, 28, 28] and tq["dataset"] == "mnist"


def test_default_model_setting(serve) -> None:
    client = serve(default_model="mnist-undefended")
    assert client.post("/classify", content=PNG).json()["model"]["name"] == "mnist-undefended"


def test_not_ready_until_warm_up_finishes(make_settings, monkeypatch) -> None:
    gate = asyncio.Event()
    original = Classifier.warm_up

    async def held_warm_up(self) -> None:
        await gate.wait()
        await original(self)

    monkeypatch.setattr(Classifier, "warm_up", held_warm_up)
    with TestClient(create_app(make_settings())) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        assert client.get("/v2/health/ready").status_code == 503
        refused = client.post("/classify", content=PNG)
        assert refused.status_code == 503
        assert refused.json()["reason"] == "not_ready" and refused.headers["Retry-After"]
        client.portal.call(gate.set)
        wait_ready(client)
        assert client.post("/classify", content=PNG).status_code == 200


def test_failed_warm_up_fails_liveness(make_settings, monkeypatch) -> None:
    async def broken(self) -> None:
        raise RuntimeError("kernel missing")

    monkeypatch.setattr(Classifier, "warm_up", broken)
    with TestClient(create_app(make_settings())) as client:
        for _ in range(200):
            if client.get("/healthz").status_code == 503:
                break
            threading.Event().wait(0.01)
        assert client.get("/healthz").json()["status"] == "failed"
        assert client.get("/readyz").status_code == 503


def test_bad_checkpoint_fails_startup(make_settings, tmp_path) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    app = create_app(make_settings(checkpoints=[tmp_path]))
    with pytest.raises(CheckpointError), TestClient(app):
        pass


def test_metrics_exposition(client) -> None:
    client.post("/classify", content=PNG)
    client.post("/classify", content=b"not an image")
    text = client.get("/metrics").text
    assert 'qusec_http_requests_total{endpoint="/classify",method="POST",status="200"} 1.0' in text
    assert 'qusec_rejections_total{reason="unsupported_format"} 1.0' in text
    for reason in REJECTION_REASONS:  # pre-initialised, so alerts see zeros
        assert f'qusec_rejections_total{{reason="{reason}"}}' in text
    for stage in STAGES:
        assert f'qusec_stage_duration_seconds_count{{stage="{stage}"}}' in text
    assert 'qusec_batch_size_count{model="mnist-tq2"}' in text
    assert 'qusec_queue_depth{model="mnist-tq2"} 0.0' in text
    assert 'qusec_model_info{architecture="cleverhans-basic-cnn"' in text
    assert "qusec_ready 1.0" in text
    assert "process_resident_memory_bytes" in text


def test_request_id_is_echoed_and_generated(client) -> None:
    mine = client.post("/classify", content=b"junk", headers={"X-Request-ID": "abc-123"})
    assert mine.headers["X-Request-ID"] == "abc-123" and mine.json()["request_id"] == "abc-123"
    hostile = client.get("/healthz", headers={"X-Request-ID": "<script>" * 20})
    assert hostile.headers["X-Request-ID"] != "<script>" * 20
    assert len(hostile.headers["X-Request-ID"]) == 24


def test_unknown_routes_and_methods_get_json_errors(client) -> None:
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.json()["reason"] == "not_found"
    wrong = client.get("/classify")
    assert wrong.status_code == 405 and wrong.json()["reason"] == "method_not_allowed"
    bad_query = client.post("/classify?include_quantized=maybe", content=PNG)
    assert bad_query.status_code == 422 and bad_query.json()["reason"] == "invalid_request"


def test_unexpected_errors_are_a_bare_500_with_the_request_id(make_settings, monkeypatch) -> None:
    def broken(self, *args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(Classifier, "encode", broken)
    app = create_app(make_settings())
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        response = client.post("/classify", content=PNG, headers={"X-Request-ID": "req-500"})
        metrics = client.get("/metrics").text
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal error",
        "reason": "internal_error",
        "request_id": "req-500",
    }
    assert 'qusec_rejections_total{reason="internal_error"} 1.0' in metrics
    assert 'endpoint="/classify",method="POST",status="500"' in metrics


def test_a_model_answering_nan_is_a_500_not_an_answer(make_settings, monkeypatch) -> None:
    """JSON has no NaN: probabilities that are not finite are the model's failure, logged."""
    monkeypatch.setattr(
        Classifier, "predict", lambda self, batch: torch.full((len(batch), 10), float("nan"))
    )
    app = create_app(make_settings())
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        response = client.post("/classify", content=PNG)
    assert response.status_code == 500
    assert response.json()["reason"] == "internal_error"


def block_inference(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Make forwards wait for ``release``; ``entered`` is set once one is waiting."""
    release, entered = threading.Event(), threading.Event()
    original = Classifier.predict

    def held(self, batch):
        entered.set()
        release.wait(120)
        return original(self, batch)

    monkeypatch.setattr(Classifier, "predict", held)
    return release, entered


def test_full_queue_answers_503_with_retry_after(serve, monkeypatch) -> None:
    client = serve(max_batch_size=1, queue_size=1, max_batch_wait_seconds=0, retry_after_seconds=7)
    release, entered = block_inference(monkeypatch)
    classifier = client.app.state.pool.classifiers["mnist-tq2"]
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(client.post, "/classify", content=PNG)
        assert entered.wait(120)
        second = pool.submit(client.post, "/classify", content=PNG)
        _wait_until(lambda: classifier.batcher.depth == 1, 120)
        refused = client.post("/classify", content=PNG)
        release.set()
        assert first.result().status_code == second.result().status_code == 200
    assert refused.status_code == 503
    assert refused.json()["reason"] == "queue_full"
    assert refused.headers["Retry-After"] == "7"


def test_too_many_in_flight_answers_503(serve, monkeypatch) -> None:
    client = serve(max_in_flight=1)
    release, entered = block_inference(monkeypatch)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.post, "/classify", content=PNG)
        assert entered.wait(120)
        refused = client.post("/classify", content=PNG)
        release.set()
        assert first.result().status_code == 200
    assert refused.status_code == 503 and refused.json()["reason"] == "overloaded"
    assert "Retry-After" in refused.headers


def test_slow_inference_answers_504(serve, monkeypatch) -> None:
    client = serve(request_timeout_seconds=0.2)
    release, _ = block_inference(monkeypatch)
    try:
        response = client.post("/classify", content=PNG)
    finally:
        release.set()
    assert response.status_code == 504 and response.json()["reason"] == "timeout"


def test_naive_endpoint_is_mounted_only_when_enabled(serve) -> None:
    files = {"file": ("d.png", PNG, "image/png")}
    assert serve().post("/naive/classify", files=files).status_code == 404
    enabled = serve(enable_naive_endpoint=True).post("/naive/classify", files=files)
    assert enabled.status_code == 200 and "probabilities" in enabled.json()


@pytest.mark.slow  # a fresh interpreter imports the whole service
def test_service_never_imports_training(checkpoints) -> None:
    code = (
        "import sys\n"
        "from service.app import create_app\n"
        "from service.settings import ServiceSettings\n"
        f"create_app(ServiceSettings(checkpoints=[{str(checkpoints['mnist-tq2'])!r}]))\n"
        "import service.cli, service.api.routes.naive\n"
        "assert 'training' not in sys.modules, sorted(m for m in sys.modules if 'train' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.slow  # a fresh interpreter imports the whole service
def test_the_serving_process_imports_no_cli_renderer_or_merge(checkpoints, tmp_path) -> None:
    # argparse itself comes with torch (torch.utils imports unittest); what is checked is
    # that no module of ours that parses a command line, renders or merges is loaded.
    code = (
        "import ast, sys\n"
        "from service.app import create_app\n"
        "from service.settings import ServiceSettings\n"
        f"create_app(ServiceSettings(checkpoints=[{str(checkpoints['mnist-tq2'])!r}],\n"
        f"    admin_token='x' * 32, robustness_db={str(tmp_path / 'jobs.db')!r}))\n"
        "import service.jobs.manager, service.api.routes.admin\n"
        "ours = {n: m for n, m in sys.modules.items()\n"
        "        if n.split('.')[0] in ('models', 'robustness', 'service')}\n"
        "forbidden = {'robustness.cli', 'robustness.cli_options', 'robustness.cli_reproduce',\n"
        "    'robustness.console', 'robustness.render', 'robustness.merge',\n"
        "    'robustness.summary', 'service.cli', 'service.jobs.worker', 'matplotlib'}\n"
        "loaded = sorted(forbidden & set(sys.modules))\n"
        "assert not loaded, loaded\n"
        "def parses_arguments(module):\n"
        "    tree = ast.parse(open(module.__file__).read())\n"
        "    return any(isinstance(n, (ast.Import, ast.ImportFrom)) and 'argparse' in\n"
        "               ast.unparse(n) for n in ast.walk(tree))\n"
        "cli = sorted(n for n, m in ours.items() if getattr(m, '__file__', None)\n"
        "             and parses_arguments(m))\n"
        "assert not cli, cli\n"
        "assert 'service.jobs.manager' in ours and 'robustness.subjects' in ours\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _wait_until(condition, timeout_seconds: float) -> None:
    deadline = threading.Event()
    for _ in range(int(timeout_seconds / 0.005)):
        if condition():
            return
        deadline.wait(0.005)
    raise AssertionError("condition not reached")
