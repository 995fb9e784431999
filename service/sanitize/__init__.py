"""Input sanitization: every upload is identified, checked and decoded here, or refused.

``imaging`` takes the format from the bytes, checks dimensions before decoding and
normalises pixels to the model's input; ``integrity`` walks the container's structure
(checksums, frames, scans, trailing data); ``decode_workers`` runs decodes that are
not tiny in killable processes (``decode_worker``, a fresh interpreter that loads
neither torch nor any web framework); ``upload`` is the bytes as received.
"""
