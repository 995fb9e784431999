"""A count of things in progress that ``with`` holds one of for its block."""

from __future__ import annotations


class Tally:
    """``with tally:`` counts one more for the block; ``count`` is how many are held.

    Requests in flight (``ClassifierPool``) and requests on their way to the batcher
    (``Classifier``) are counted so, once or twice per request on the event loop: a class
    rather than a generator-based context manager, which costs about a microsecond more to
    enter and leave. One tally serves every holder at once (it keeps nothing per block)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __enter__(self) -> None:
        self.count += 1

    def __exit__(self, *exc_info: object) -> None:
        self.count -= 1
