"""Query parameters a route does not take are refused with 400, naming them.

A misspelt or invented parameter (``top_k=3``) that is silently ignored leaves a client
believing it was honoured. Every FastAPI route gets this check as an app-wide dependency;
``POST /classify``, a plain ASGI route, calls ``check_query`` itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import Request
from fastapi.dependencies.models import Dependant

from service.errors import UnknownQueryParameter

# Names echoed in the message are cut short: they come from the client.
_SHOWN_NAMES, _SHOWN_CHARS = 8, 40


def check_query(given: Iterable[str], accepted: Iterable[str]) -> None:
    """Raise ``UnknownQueryParameter`` naming every given name not in ``accepted``."""
    allowed = set(accepted)
    unknown = sorted({name for name in given if name not in allowed})
    if not unknown:
        return
    shown = ", ".join(repr(name[:_SHOWN_CHARS]) for name in unknown[:_SHOWN_NAMES])
    more = f" and {len(unknown) - _SHOWN_NAMES} more" if len(unknown) > _SHOWN_NAMES else ""
    takes = ", ".join(sorted(allowed)) if allowed else "none"
    plural = "s" if len(unknown) > 1 else ""
    raise UnknownQueryParameter(
        f"unknown query parameter{plural} {unknown[:_SHOWN_NAMES]}",
        message=f"unknown query parameter{plural}: {shown}{more}; this route takes: {takes}",
    )


def declared_query_names(dependant: Dependant) -> set[str]:
    """The query parameters a route declares, through its dependencies too."""
    names = {param.alias for param in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= declared_query_names(dependency)
    return names


async def reject_unknown_query(request: Request) -> None:
    """The app-wide dependency: only what the matched route declares may be in the query."""
    if not request.scope.get("query_string"):
        return
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is not None:
        check_query(request.query_params.keys(), declared_query_names(dependant))
