"""What the client raises when the service refuses a request."""

from __future__ import annotations

import httpx

# Statuses the service answers with Retry-After: worth retrying later as they are.
RETRYABLE_STATUSES = (429, 503)


class QuSecError(Exception):
    """The service answered with an error: its HTTP status and stable reason code.

    ``reason`` is the service's code (``unknown_model``, ``body_too_large``, ``unauthorized``,
    ...; the OpenAPI document lists each route's), ``message`` its text for a person,
    ``request_id`` the id its log lines carry, ``retry_after`` the seconds it asked to wait.
    Connection failures and client-side timeouts are not answers; they stay httpx errors.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUSES


class CheckTimeout(TimeoutError):
    """A robustness check had not finished when the client stopped waiting for it."""

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"robustness check {job_id} still {status}")
        self.job_id = job_id
        self.status = status


def error_from(response: httpx.Response) -> QuSecError:
    """The error an unsuccessful answer carries: the service's JSON body, or its status
    alone when something in between (a proxy, say) answered in another form."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("reason"), str):
        text = response.text.strip()[:200] or response.reason_phrase
        return QuSecError(response.status_code, "http_error", text, None, _retry_after(response))
    return QuSecError(
        response.status_code,
        body["reason"],
        str(body.get("error", "")),
        body.get("request_id"),
        _retry_after(response),
    )


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None
