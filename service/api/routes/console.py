"""The web console: static HTML, CSS and JavaScript from ``console_files/`` beside this file.

The page is one more client of the public JSON routes (``/models``, ``/classify``) and, with
the admin token typed into it, of the admin routes. Only the files listed in ``FILES`` are
served, read from the package on first request; each answer carries a Content-Security-Policy
that allows scripts, styles and requests from this origin only (no inline script or style, no
framing), so a string from the service that slipped past the page's escaping still could not
run.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException

router = APIRouter(include_in_schema=False)

# Every file the console is made of, with its media type; nothing else under /ui/ exists.
FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    "favicon.ico": "image/vnd.microsoft.icon",
    **{
        f"js/{name}.js": "text/javascript; charset=utf-8"
        for name in (
            "main",
            "api",
            "dom",
            "format",
            "chart",
            "gallery",
            "models",
            "classify",
            "drawing",
            "report",
            "checks",
            "compare",
            "robustness",
            "admin",
        )
    },
}

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        # Images arrive from the JSON APIs as base64 PNG; the drawing pad makes blobs.
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Files change only with the package; revalidating costs little on loopback or a LAN.
    "Cache-Control": "no-cache",
}


@cache
def _read(name: str) -> bytes:
    return resources.files("service.api.routes").joinpath("console_files", name).read_bytes()


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307, headers=HEADERS)


@router.get("/ui/")
async def index() -> Response:
    return _serve("index.html")


@router.get("/favicon.ico")
async def favicon() -> Response:
    # Browsers ask for it on their own; the console's page names favicon.svg instead.
    return _serve("favicon.ico")


@router.get("/ui/{name:path}")
async def console_file(name: str) -> Response:
    return _serve(name)


def _serve(name: str) -> Response:
    media_type = FILES.get(name)
    if media_type is None:
        raise HTTPException(404)
    return Response(_read(name), media_type=media_type, headers=HEADERS)
