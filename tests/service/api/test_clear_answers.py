"""Clear answers, over real HTTP against ``python -m service``: unknown query parameters,
unknown models and oversized bodies are named; an upload that clearly does not fit the
model is answered with a warning; ``/``, ``/docs`` and ``/redoc`` carry the console's
security headers and load nothing from elsewhere."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from importlib import resources

import httpx
import numpy as np
import pytest
from PIL import Image

from models.evalset import EVAL_DIR, load_eval_set
from service.api.routes.docs import ASSETS
from tests.service.helpers.images import TEST_BODY_LIMIT
from tests.service.helpers.servers import STOPPED_BY_SIGTERM, Server, start_server, stop

PAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("clear-answers")
    models = [checkpoints["mnist-tq2"], checkpoints["cifar-cq3"]]
    running = start_server(
        folder / "server.log", [arg for m in models for arg in ("--checkpoint", str(m))]
    )
    yield running
    assert stop(running) in STOPPED_BY_SIGTERM, (folder / "server.log").read_text()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def png(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def real_digit() -> bytes:
    """The first official MNIST test digit, as a 28 x 28 grey PNG."""
    first = load_eval_set(EVAL_DIR / "mnist-test-first1000.npz").images[0, 0]
    return png((first.numpy() * 255).round().astype(np.uint8))


def colour_photo(width: int = 1200, height: int = 900) -> bytes:
    """A smooth colour gradient, saved as a JPEG, as a phone photo would be."""
    x = np.linspace(0, 1, width)[None, :]
    y = np.linspace(0, 1, height)[:, None]
    rgb = np.stack([200 * x + 0 * y, 60 + 120 * y + 0 * x, 180 - 150 * x * y], axis=2)
    return png(rgb.astype(np.uint8), "JPEG")


def test_unknown_query_parameters_are_refused_and_named(http: httpx.Client) -> None:
    refused = http.post("/classify?model=mnist-tq2&top_k=3", content=real_digit())
    assert refused.status_code == 400
    assert refused.json()["reason"] == "unknown_query_parameter"
    assert "'top_k'" in refused.json()["error"] and "model" in refused.json()["error"]
    for path in ("/models?verbose=1", "/healthz?a=1&b=2", "/v2/models/mnist-tq2?x="):
        answer = http.get(path)
        assert answer.status_code == 400, path
        assert answer.json()["reason"] == "unknown_query_parameter", path
    assert "'a', 'b'" in http.get("/healthz?a=1&b=2").json()["error"]
    assert http.post("/classify?include_input=true", content=real_digit()).status_code == 200


def test_an_unknown_model_is_answered_with_the_loaded_ones(http: httpx.Client) -> None:
    answer = http.post("/classify?model=mnist-cq9", content=real_digit())
    assert answer.status_code == 404 and answer.json()["reason"] == "unknown_model"
    assert answer.json()["error"].endswith("loaded: mnist-tq2, cifar-cq3")
    v2 = http.post("/v2/models/nope/infer", json={"inputs": []})
    assert v2.status_code == 404 and "loaded: mnist-tq2, cifar-cq3" in v2.json()["error"]


def test_a_body_over_the_limit_is_told_the_limit(http: httpx.Client) -> None:
    answer = http.post("/classify", content=b"\x89PNG" + b"\x00" * TEST_BODY_LIMIT)
    assert answer.status_code == 413 and answer.json()["reason"] == "body_too_large"
    assert f"the limit of {TEST_BODY_LIMIT} bytes" in answer.json()["error"]
    files = {"file": ("big.png", b"\x00" * (TEST_BODY_LIMIT + 1), "image/png")}
    form = http.post("/classify", files=files)
    assert form.status_code == 413 and f"{TEST_BODY_LIMIT} bytes" in form.json()["error"]


def test_a_colour_photo_sent_to_the_grey_default_is_answered_with_a_warning(
    http: httpx.Client,
) -> None:
    photo = http.post("/classify", content=colour_photo())
    assert photo.status_code == 200 and photo.json()["model"]["name"] == "mnist-tq2"
    codes = [warning["code"] for warning in photo.json()["warnings"]]
    assert codes == ["colour_image_for_grey_model", "much_larger_than_input"]
    assert "mnist-tq2" in photo.json()["warnings"][0]["message"]
    assert photo.headers["QuSec-Input-Warning"] == ", ".join(codes)
    assert photo.json()["input"]["colour"] is True
    small = http.post("/classify", content=colour_photo(640, 480))
    assert small.headers["QuSec-Input-Warning"] == "colour_image_for_grey_model"
    # The honest uploads: a real test digit, a grey digit saved as RGB at ten times the size.
    digit = http.post("/classify", content=real_digit())
    assert digit.json()["warnings"] == [] and "QuSec-Input-Warning" not in digit.headers
    grey = np.asarray(Image.open(io.BytesIO(real_digit())).resize((280, 280)).convert("RGB"))
    assert http.post("/classify", content=png(grey, "JPEG")).json()["warnings"] == []
    # The colour model the photo was meant for takes it without a word; a huge or a long
    # thin image is warned about there too.
    meant = http.post("/classify?model=cifar-cq3", content=colour_photo(320, 240))
    assert meant.json()["warnings"] == []
    huge = http.post("/classify?model=cifar-cq3", content=colour_photo(2400, 1800))
    assert [w["code"] for w in huge.json()["warnings"]] == ["much_larger_than_input"]
    strip = http.post("/classify?model=cifar-cq3", content=colour_photo(300, 60))
    assert [w["code"] for w in strip.json()["warnings"]] == ["aspect_ratio_mismatch"]
    digit_to_colour = http.post("/classify?model=cifar-cq3", content=real_digit())
    assert digit_to_colour.headers["QuSec-Input-Warning"] == "grey_image_for_colour_model"


def _assert_page_headers(answer: httpx.Response) -> None:
    for name, value in PAGE_HEADERS.items():
        assert answer.headers[name] == value, (answer.url, name)
    policy = answer.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
    assert "script-src 'self';" in policy and "'unsafe-eval'" not in policy


def test_the_root_redirect_carries_the_console_headers(http: httpx.Client) -> None:
    answer = http.get("/")
    assert answer.status_code == 307 and answer.headers["Location"] == "/ui/"
    _assert_page_headers(answer)
    assert (
        answer.headers["Content-Security-Policy"]
        == (http.get("/ui/").headers["Content-Security-Policy"])
    )


def test_docs_pages_and_their_assets_are_served_from_here(http: httpx.Client) -> None:
    console_policy = http.get("/ui/").headers["Content-Security-Policy"]
    for path in ("/docs", "/redoc"):
        page = http.get(path)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        _assert_page_headers(page)
        # Every script, stylesheet and icon the page names is one of ours.
        referenced = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert referenced and all(ref.startswith("/docs/assets/") for ref in referenced)
        for ref in referenced:
            asset = http.get(ref)
            assert asset.status_code == 200, ref
            _assert_page_headers(asset)
    assert http.get("/docs").headers["Content-Security-Policy"] == console_policy
    # ReDoc alone may style inline and start a blob worker; scripts stay this origin's.
    redoc_policy = http.get("/redoc").headers["Content-Security-Policy"]
    assert "style-src 'self' 'unsafe-inline'" in redoc_policy and "worker-src blob:" in redoc_policy
    for name, (package, path, media_type) in ASSETS.items():
        asset = http.get(f"/docs/assets/{name}")
        assert asset.headers["Content-Type"] == media_type
        assert asset.content == resources.files(package).joinpath(path).read_bytes()
    assert http.get("/docs/assets/..%2Fdocs_files%2Fswagger.html").status_code == 404
    assert http.get("/docs/assets/core.py").status_code == 404
    assert http.get("/docs/oauth2-redirect").status_code == 404
