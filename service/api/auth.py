"""Bearer tokens: the admin token, checked once as the admin routers' dependency, and the
read-only scrape token, which opens only the robustness scrape (``/admin/metrics``).

Each comes from its setting (``QUSEC_ADMIN_TOKEN``, ``QUSEC_SCRAPE_TOKEN``) or from the
file its ``_FILE`` setting names (read at startup, so a mounted secret can be used).
Without an admin token the admin routes are not mounted at all and answer 404.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from service.errors import Forbidden, Unauthorized
from service.settings import MIN_ADMIN_TOKEN_CHARS, ServiceSettings


class AdminTokenError(RuntimeError):
    """A configured token file cannot be used; startup stops with this reason."""


def load_admin_token(settings: ServiceSettings) -> SecretStr | None:
    """The admin token, from the setting or its file; None when admin is disabled."""
    return _load_token(settings.admin_token, settings.admin_token_file, "admin")


def load_scrape_token(settings: ServiceSettings) -> SecretStr | None:
    """The scrape token, from the setting or its file; None when there is none."""
    return _load_token(settings.scrape_token, settings.scrape_token_file, "scrape")


def _load_token(value: SecretStr | None, file: Path | None, kind: str) -> SecretStr | None:
    if value is not None:
        return SecretStr(value.get_secret_value().strip())
    if file is None:
        return None
    try:
        token = file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise AdminTokenError(
            f"{kind} token file {file} is unreadable ({type(exc).__name__})"
        ) from None
    if len(token) < MIN_ADMIN_TOKEN_CHARS:
        raise AdminTokenError(
            f"{kind} token file {file} holds fewer than {MIN_ADMIN_TOKEN_CHARS} characters"
        )
    return SecretStr(token)


def _digest(value: str) -> bytes:
    # Comparing fixed-length digests keeps even the token's length out of the timing.
    return hashlib.sha256(value.encode("utf-8")).digest()


# Declares the scheme in the OpenAPI document; the header is checked below, so that a
# missing token is our 401 with its JSON body, not FastAPI's.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="adminBearer",
    description="the admin token (QUSEC_ADMIN_TOKEN or QUSEC_ADMIN_TOKEN_FILE)",
)
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)]


def _check_bearer(request: Request, *accepted: SecretStr | None) -> None:
    """401 without a bearer token, 403 unless it is one of ``accepted``; every comparison
    is made, in constant time, whichever matches."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized("no bearer token on an admin route")
    digest = _digest(given.strip())
    matches = [
        hmac.compare_digest(digest, _digest(token.get_secret_value()))
        for token in accepted
        if token is not None
    ]
    if not any(matches):
        raise Forbidden("wrong token on an admin route")


async def require_admin(request: Request, _credentials: BearerCredentials = None) -> None:
    """The admin routers' dependency: the admin token, nothing else."""
    _check_bearer(request, getattr(request.app.state, "admin_token", None))


async def require_scraper(request: Request) -> None:
    """The robustness scrape's dependency: the scrape token or the admin token."""
    state = request.app.state
    _check_bearer(request, getattr(state, "scrape_token", None), state.admin_token)


def holds_admin_token(request: Request) -> bool:
    """Whether a request on a public route carries the admin token (so it is not anonymous:
    ``/classify`` then allows costlier decodes). A wrong or missing token is simply anonymous."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected: SecretStr | None = getattr(request.app.state, "admin_token", None)
    if scheme.lower() != "bearer" or not given.strip() or expected is None:
        return False
    return hmac.compare_digest(_digest(given.strip()), _digest(expected.get_secret_value()))
