"""What decoding an upload will cost, estimated from its header before any pixel is decoded.

The estimate is the bytes of samples the decoder produces: pixels x channels x bytes
per sample (2 for 16-bit, else 1), for every frame and, in a JPEG, for every scan
over the components that scan codes (a progressive scan is another pass over its
components' coefficients; a component subsampled 2 x 2 has a quarter of the samples):

| format | read from |
|---|---|
| PNG | IHDR (size, bit depth, colour type); frames from acTL |
| JPEG | the frame header (size, components, sampling) and each scan header after it |
| GIF | the logical screen; frames counted by their graphic control extensions |
| WebP | the VP8, VP8L or VP8X header (size, alpha); frames counted by ANMF chunks |
| BMP | the info header (size, bits per pixel) |

Frames count in full although only the first is decoded: an estimate that is too high
only moves an upload to the heavy lane or past the anonymous ceiling. The work here is
bounded: fixed offsets, a bounded walk to the first image data, and ``bytes.find`` or
``bytes.count`` (C loops) for scans and frames. ``None`` means the header could not be
read; the decode worker's own checks then refuse the upload with the precise reason.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from service.sanitize.imaging import identify_format

# Chunks or segments walked before the image data; real files have a handful.
_MAX_HEADER_STEPS = 256
# Scan headers read (the scan cap refuses far fewer; this only bounds the loop).
_MAX_SCANS = 10_000
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_JPEG_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC9, 0xCA})


@dataclass(frozen=True)
class DecodeCost:
    format: str
    width: int
    height: int
    bytes: int  # estimated bytes of decoded samples, over frames and scans
    detail: str  # the factors, for logs and error messages
    scans: int = 1  # a JPEG's scan headers (an upper bound: the worker counts exactly)


def estimate(data: bytes) -> DecodeCost | None:
    """The decode cost of ``data``; 415 for a format that is not allowed; None when the
    header cannot be read."""
    fmt = identify_format(data)
    try:
        return _ESTIMATES[fmt](data)
    except (IndexError, struct.error, ValueError, ZeroDivisionError):
        return None


def _cost(fmt: str, width: int, height: int, per_pixel: float, repeats: float, what: str):
    total = int(width * height * per_pixel * repeats)
    return DecodeCost(fmt, width, height, total, f"{fmt} {width}x{height}, {what}")


def _png(data: bytes) -> DecodeCost | None:
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    if data[12:16] != b"IHDR" or colour not in _PNG_CHANNELS:
        return None
    channels = _PNG_CHANNELS[colour]
    frames, pos = 1, 8
    for _ in range(_MAX_HEADER_STEPS):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"acTL":
            frames = max(1, struct.unpack_from(">I", data, pos + 8)[0])
        if kind in (b"IDAT", b"IEND"):
            break
        pos += 12 + length
    per_pixel = channels * (2 if depth == 16 else 1)
    what = f"{channels} channels of {depth} bits, {frames} frames"
    return _cost("PNG", width, height, per_pixel, frames, what)


def _jpeg(data: bytes) -> DecodeCost | None:
    pos, frame = 2, None
    for _ in range(_MAX_HEADER_STEPS):
        while data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos + 1]
        if data[pos] != 0xFF or marker in (0xD9, 0xDA):
            return None  # the image data or its end before any frame header
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _JPEG_FRAMES:
            frame = data[pos + 4 : pos + 2 + length]
            break
        pos += 2 + length
    if frame is None:
        return None
    height, width, count = struct.unpack_from(">HHB", frame, 1)
    sampling = {frame[6 + 3 * i]: frame[7 + 3 * i] for i in range(count)}
    h_max = max(s >> 4 for s in sampling.values())
    v_max = max(s & 0x0F for s in sampling.values())
    share = {c: (s >> 4) * (s & 0x0F) / (h_max * v_max) for c, s in sampling.items()}
    components, scans = 0.0, 0
    scan = data.find(b"\xff\xda", pos)
    while scan >= 0 and scans < _MAX_SCANS:
        selected = data[scan + 5 : scan + 5 + 2 * data[scan + 4] : 2]
        components += sum(share.get(c, 1.0) for c in selected)
        scans += 1
        scan = data.find(b"\xff\xda", scan + 2)
    cost = _cost("JPEG", width, height, 1, components, f"{count} components, {scans} scans")
    return replace(cost, scans=scans)


def _gif(data: bytes) -> DecodeCost:
    width, height = struct.unpack_from("<HH", data, 6)
    frames = max(1, data.count(b"\x21\xf9\x04"))
    return _cost("GIF", width, height, 1, frames, f"{frames} frames")


def _webp(data: bytes) -> DecodeCost | None:
    kind = data[12:16]
    if kind == b"VP8 ":
        width, height = (v & 0x3FFF for v in struct.unpack_from("<HH", data, 26))
        alpha, frames = False, 1
    elif kind == b"VP8L":
        (bits,) = struct.unpack_from("<I", data, 21)
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        alpha, frames = bool(bits >> 28 & 1), 1
    elif kind == b"VP8X":
        flags = data[20]
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        alpha = bool(flags & 0x10)
        frames = max(1, data.count(b"ANMF")) if flags & 0x02 else 1
    else:
        return None
    channels = 4 if alpha else 3
    return _cost("WEBP", width, height, channels, frames, f"{channels} channels, {frames} frames")


def _bmp(data: bytes) -> DecodeCost:
    (header,) = struct.unpack_from("<I", data, 14)
    if header == 12:  # OS/2 core header: 16-bit sizes
        width, height, _, bits = struct.unpack_from("<HHHH", data, 18)
    else:
        width, height, _, bits = struct.unpack_from("<iiHH", data, 18)
    per_pixel = max(1.0, bits / 8)
    return _cost("BMP", abs(width), abs(height), per_pixel, 1, f"{bits} bits per pixel")


_ESTIMATES = {"PNG": _png, "JPEG": _jpeg, "GIF": _gif, "WEBP": _webp, "BMP": _bmp}
