"""Who holds the connections: open connections per client, and which one gives way.

A client is a source address (the TCP peer; behind a proxy, the proxy). The ledger
keeps each client's open connections, so that the connection layer can cap them per
client and, when the server is full, close a connection of the client holding the
most rather than the oldest one anywhere: a client that opens a thousand connections
loses its own, not its neighbours'.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Protocol


class Phase(IntEnum):
    """What a connection is doing, in the order connections give way for a new one."""

    ANSWERED = 0  # answered; only reading and discarding what is left of its request
    IDLE = 1  # waiting for a request head, nothing of it sent yet
    PARTIAL_HEAD = 2  # part of a request head arrived
    READING_BODY = 3  # its request's body is still arriving; nothing admitted yet


class Holder(Protocol):
    client_address: str
    idle_since: float

    def phase(self) -> Phase | None: ...  # None: serving a request, never closed for room


class ClientLedger:
    """Open connections per client, in one serving process."""

    def __init__(self) -> None:
        self._open: dict[str, set[Holder]] = {}

    def opened(self, holder: Holder) -> int:
        """Count a new connection; return how many its client has open now."""
        held = self._open.setdefault(holder.client_address, set())
        held.add(holder)
        return len(held)

    def closed(self, holder: Holder) -> None:
        held = self._open.get(holder.client_address)
        if held is not None:
            held.discard(holder)
            if not held:
                del self._open[holder.client_address]

    def count(self, client: str) -> int:
        return len(self._open.get(client, ()))

    def choose_victim(self, newcomer: Holder) -> Holder | None:
        """The connection to close for ``newcomer``: of the client holding the most
        connections, the one furthest from being served (answered, idle, a partial head,
        a body still arriving), the longest waiting first. A connection serving a request
        is never chosen, and none when the newcomer's own client holds the most and its
        only candidates are uploads: then the newcomer should be refused instead."""
        for client in sorted(self._open, key=lambda c: len(self._open[c]), reverse=True):
            best, best_key = None, None
            for holder in self._open[client]:
                phase = None if holder is newcomer else holder.phase()
                key = (phase, holder.idle_since)
                if phase is not None and (best_key is None or key < best_key):
                    best, best_key = holder, key
            if best_key is None:
                continue
            if client == newcomer.client_address and best_key[0] is Phase.READING_BODY:
                return None
            return best
        return None


def client_address(scope: dict) -> str:
    """The client a request counts against: its connection's source address."""
    client = scope.get("client")
    return client[0] if client else ""
