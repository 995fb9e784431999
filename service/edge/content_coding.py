"""Compressed request bodies (``Content-Encoding: gzip`` or ``deflate``), inflated with the
same size limit as a plain body, so a small compressed body cannot expand without bound."""

from __future__ import annotations

import zlib

from service.errors import BadContentEncoding, BodyTooLarge, UnsupportedContentEncoding

# zlib's window-bits: gzip framing, zlib framing (HTTP's "deflate"), and raw deflate, which
# some clients send as "deflate" too.
_GZIP, _ZLIB, _RAW = 16 + zlib.MAX_WBITS, zlib.MAX_WBITS, -zlib.MAX_WBITS
SUPPORTED = ("identity", "gzip", "deflate")


def decode_content(body: bytes, encoding: str | None, limit: int) -> bytes:
    """``body`` as sent, inflated per ``encoding``; at most ``limit`` bytes come out."""
    codings = [c.strip().lower() for c in (encoding or "").split(",") if c.strip()]
    # Codings apply in the order listed, so they are undone from the last one.
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding == "gzip" or coding == "x-gzip":
            body = _inflate(body, (_GZIP,), limit, coding)
        elif coding == "deflate":
            body = _inflate(body, (_ZLIB, _RAW), limit, coding)
        else:
            raise UnsupportedContentEncoding(f"Content-Encoding {coding[:32]!r}")
    return body


def _inflate(body: bytes, framings: tuple[int, ...], limit: int, coding: str) -> bytes:
    for framing in framings:
        inflater = zlib.decompressobj(framing)
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit or inflater.unconsumed_tail:
            raise BodyTooLarge(
                f"{coding} body inflates past the limit of {limit} bytes",
                message=f"the body inflates past the limit of {limit} bytes",
            )
        if not inflater.eof or inflater.unused_data:
            raise BadContentEncoding(f"{coding} body is truncated or has trailing bytes")
        return out
    raise BadContentEncoding(f"{coding} body does not inflate")
