"""The interactive API documentation, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), offline.

FastAPI's own pages load Swagger UI and ReDoc from a public CDN (a blank page without
internet access) and start them with an inline script. Here the pages are two small files
beside this module (``docs_files/``) and the viewers are the official release files that
the ``fastapi-offline`` package ships (``swagger-ui-bundle.js``, ``swagger-ui.css``,
``redoc.standalone.js``), served from this origin. Every answer carries the console's
security headers: a Content-Security-Policy that allows scripts, styles and requests from
this origin only and no framing, ``nosniff``, no referrer.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from service.api.routes.console import CONTENT_SECURITY_POLICY, HEADERS

router = APIRouter(include_in_schema=False)

# The pages and the start-up script are ours; the viewers come from an installed package.
_OURS = "service.api.routes"
_VIEWERS = "fastapi_offline"
ASSETS = {
    "swagger-init.js": (_OURS, "docs_files/swagger-init.js", "text/javascript; charset=utf-8"),
    "swagger-ui-bundle.js": (
        _VIEWERS,
        "static/swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
    ),
    "swagger-ui.css": (_VIEWERS, "static/swagger-ui.css", "text/css; charset=utf-8"),
    "redoc.standalone.js": (
        _VIEWERS,
        "static/redoc.standalone.js",
        "text/javascript; charset=utf-8",
    ),
    "favicon.png": (_VIEWERS, "static/favicon.png", "image/png"),
}
_HTML = "text/html; charset=utf-8"
# ReDoc styles itself with styled-components, which writes <style> elements at run time,
# and runs its search index in a worker made from a blob: its page alone may apply inline
# styles and start blob workers. Inline scripts stay refused, and images, fonts and
# requests stay limited to this origin, so a style cannot carry data anywhere.
REDOC_HEADERS = {
    **HEADERS,
    "Content-Security-Policy": CONTENT_SECURITY_POLICY.replace(
        "style-src 'self'", "style-src 'self' 'unsafe-inline'; worker-src blob:"
    ),
}


@cache
def _read(package: str, path: str) -> bytes:
    return resources.files(package).joinpath(path).read_bytes()


def _answer(
    package: str, path: str, media_type: str, headers: dict[str, str] = HEADERS
) -> Response:
    return Response(_read(package, path), media_type=media_type, headers=headers)


@router.get("/docs")
async def swagger_ui() -> Response:
    return _answer(_OURS, "docs_files/swagger.html", _HTML)


@router.get("/redoc")
async def redoc() -> Response:
    return _answer(_OURS, "docs_files/redoc.html", _HTML, REDOC_HEADERS)


@router.get("/docs/assets/{name}")
async def asset(name: str) -> Response:
    found = ASSETS.get(name)
    if found is None:
        raise HTTPException(404)
    return _answer(*found)
