"""Admission of inference requests: the one place that decides whether one may proceed.

``POST /classify`` and ``POST /v2/models/{name}/infer`` both go through ``admitted``:
refused at once (503 ``overloaded``) when every in-flight slot is taken, before a byte
of the body is read; the body is then read within the shared body budget and the
client's share of it, so a client that sends slowly holds its own connection and the
bytes it sent, nothing else; only once the body is in does the request take an
in-flight slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from service.edge.body import Reservation
from service.inference.pool import ClassifierPool

Body = TypeVar("Body")


@asynccontextmanager
async def admitted(
    pool: ClassifierPool, read: Callable[[Reservation], Awaitable[Body]], client: str
) -> AsyncIterator[Body]:
    """Read the body with ``read`` and hold an in-flight slot while the caller uses it;
    the body's bytes count against ``client``'s share of the body budget too."""
    pool.check_capacity()
    with pool.body_budget.reserve(client) as reservation:
        body = await read(reservation)
        with pool.admit():
            yield body
