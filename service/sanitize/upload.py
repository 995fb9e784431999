"""An image upload as the pipeline receives it: bytes, never a request object."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Upload:
    """Image bytes as received; ``declared_type`` is reported back, never trusted."""

    data: bytes
    declared_type: str
    via: str  # "raw" or "multipart"
    read_seconds: float = 0.0  # how long the body took to arrive (the "read" stage)
    client: str = ""  # who sent it (a source address): its decodes count against its share
    anonymous: bool = True  # sent without the admin token: the lower decode-cost ceiling
