"""Admission of inference requests: the one place that decides whether one may proceed.

``POST /classify`` and ``POST /v2/models/{name}/infer`` both go through ``admitted``:
refused at once (503 ``overloaded``) when every in-flight slot is taken, before a byte
of the body is read; the body is then read within the shared body budget and the
client's share of it, so a client that sends slowly holds its own connection and the
bytes it sent, nothing else; only once the body is in does the request take an
in-flight slot.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from service.edge.body import Reservation
from service.inference.pool import ClassifierPool

Body = TypeVar("Body")


def admitted(
    pool: ClassifierPool, read: Callable[[Reservation], Awaitable[Body]], client: str
) -> Admission[Body]:
    """Read the body with ``read`` and hold an in-flight slot while the caller uses it
    (``async with``); the body's bytes count against ``client``'s share of the body
    budget too."""
    return Admission(pool, read, client)


class Admission(Generic[Body]):
    """``admitted``'s context: a class, not a generator, as it is entered once per
    request, on the event loop."""

    __slots__ = ("pool", "read", "client", "reservation", "slot")

    def __init__(
        self, pool: ClassifierPool, read: Callable[[Reservation], Awaitable[Body]], client: str
    ) -> None:
        self.pool, self.read, self.client = pool, read, client

    async def __aenter__(self) -> Body:
        pool = self.pool
        pool.check_capacity()
        reservation = self.reservation = pool.body_budget.reserve(self.client).__enter__()
        try:
            body = await self.read(reservation)
            self.slot = pool.admit()
            self.slot.__enter__()
        except BaseException:  # the reservation is left when reading or admitting fails
            reservation.__exit__(*sys.exc_info())
            raise
        return body

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            self.slot.__exit__(*exc_info)
        finally:
            self.reservation.__exit__(*exc_info)
