"""Admin access: one bearer token, checked once, as the admin router's dependency.

The token comes from ``QUSEC_ADMIN_TOKEN`` or the file named by
``QUSEC_ADMIN_TOKEN_FILE`` (read at startup, so a mounted secret can be used).
With neither, the admin routes are not mounted at all and answer 404.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from service.errors import Forbidden, Unauthorized
from service.settings import MIN_ADMIN_TOKEN_CHARS, ServiceSettings


class AdminTokenError(RuntimeError):
    """The configured token file cannot be used; startup stops with this reason."""


def load_admin_token(settings: ServiceSettings) -> SecretStr | None:
    """The configured token, from the setting or its file; None when admin is disabled."""
    if settings.admin_token is not None:
        return SecretStr(settings.admin_token.get_secret_value().strip())
    if settings.admin_token_file is None:
        return None
    try:
        token = settings.admin_token_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise AdminTokenError(
            f"admin token file {settings.admin_token_file} is unreadable ({type(exc).__name__})"
        ) from None
    if len(token) < MIN_ADMIN_TOKEN_CHARS:
        raise AdminTokenError(
            f"admin token file {settings.admin_token_file} holds fewer than "
            f"{MIN_ADMIN_TOKEN_CHARS} characters"
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


async def require_admin(request: Request, _credentials: BearerCredentials = None) -> None:
    """401 without a bearer token, 403 with the wrong one; compared in constant time."""
    given = _bearer(request)
    if given is None:
        raise Unauthorized("no bearer token on an admin route")
    if not _matches(request, given):
        raise Forbidden("wrong admin token")


def holds_admin_token(request: Request) -> bool:
    """Whether a request on a public route carries the admin token (so it is not anonymous:
    ``/classify`` then allows costlier decodes). A wrong token is simply anonymous."""
    given = _bearer(request)
    return given is not None and _matches(request, given)


def _bearer(request: Request) -> str | None:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    return given.strip()


def _matches(request: Request, given: str) -> bool:
    expected: SecretStr | None = getattr(request.app.state, "admin_token", None)
    return expected is not None and hmac.compare_digest(
        _digest(given), _digest(expected.get_secret_value())
    )
