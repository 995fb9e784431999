"""The web console's files and headers, and the classify fields it shows (no browser here;
tests/service/api/test_console_browser.py drives the page itself)."""

from __future__ import annotations

import base64
import fnmatch
import io
import re
import tomllib
from pathlib import Path

import numpy as np
from PIL import Image

from service.api.routes.console import FILES
from tests.service.helpers.images import digit, encode

CONSOLE = Path(__file__).resolve().parents[3] / "service" / "api" / "routes" / "console_files"


def test_root_redirects_to_the_console_and_every_file_is_served(client) -> None:
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for name, media_type in FILES.items():
        answer = client.get(f"/ui/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-type"] == media_type
        assert answer.content == (CONSOLE / name).read_bytes()


def test_every_console_answer_has_a_strict_content_security_policy(client) -> None:
    for path in ("/ui/", "/ui/js/main.js", "/ui/console.css"):
        headers = client.get(path).headers
        policy = dict(
            part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";")
        )
        assert policy["default-src"] == "'none'"
        assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
        assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
        assert "unsafe" not in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"


def test_only_the_listed_files_exist(client) -> None:
    for path in ("/ui/../app.py", "/ui/console.py", "/ui/js/", "/ui/js/missing.js", "/ui/%2e%2e/x"):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert answer.json()["reason"] == "not_found"
    # Every file shipped in the folder is listed, so none is forgotten by the router.
    shipped = {str(p.relative_to(CONSOLE)) for p in CONSOLE.rglob("*") if p.is_file()}
    assert shipped == set(FILES)


def test_the_page_has_no_inline_script_style_or_markup_injection() -> None:
    html = (CONSOLE / "index.html").read_text()
    assert re.findall(r"<script\b[^>]*>", html) == ['<script type="module" src="/ui/js/main.js">']
    assert "<style" not in html and not re.search(r"\sstyle\s*=", html)
    assert not re.search(r"\son[a-z]+\s*=", html)  # no inline event handlers
    for script in CONSOLE.glob("js/*.js"):
        text = script.read_text()
        # Data reaches the page only as text nodes and attributes, never as markup.
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, (script.name, sink)
        for path in re.findall(r"""fetch\(([^,)]+)""", text):
            assert path.strip() == "path", (script.name, path)
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text


def _png_pixels(field: dict) -> np.ndarray:
    assert field["media_type"] == "image/png" and field["encoding"] == "base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(field["data"]))))


def test_classify_returns_the_normalised_input_on_request(client) -> None:
    # A 40 x 30 grey ramp is resized and letterboxed to the model's 28 x 28.
    ramp = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (30, 1))
    answer = client.post(
        "/classify?include_input=true&include_quantized=true",
        content=encode(Image.fromarray(ramp), "PNG"),
    ).json()
    model_input = _png_pixels(answer["input_image"]) / 255
    quantized = _png_pixels(answer["quantized_image"])
    assert model_input.shape == quantized.shape == (28, 28)
    assert len(np.unique(model_input)) > 10
    # The quantized image is the input put through the checkpoint's threshold (0.4),
    # up to the 8-bit rounding of the PNGs right at the threshold.
    clear = np.abs(model_input - 0.4) > 1 / 255
    assert np.array_equal(quantized[clear], np.where(model_input[clear] > 0.4, 255, 0))
    plain = client.post("/classify", content=encode(digit(), "PNG")).json()
    assert "input_image" not in plain and "quantized_image" not in plain


def test_every_console_file_is_package_data() -> None:
    """An installed (non-editable) service must carry the files the router serves."""
    pyproject = tomllib.loads((CONSOLE.parents[3] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["service.api.routes"]
    for name in FILES:
        assert any(fnmatch.fnmatch(f"console_files/{name}", p) for p in patterns), name


def test_the_favicon_is_served_where_browsers_look_for_it(client) -> None:
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"] == "image/vnd.microsoft.icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO header
    assert icon.content == (CONSOLE / "favicon.ico").read_bytes()
    page = client.get("/ui/").text
    assert '<link rel="icon" href="/ui/favicon.svg" type="image/svg+xml">' in page
    assert client.get("/ui/favicon.svg").headers["content-type"] == "image/svg+xml"
