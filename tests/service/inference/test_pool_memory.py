"""A serving process keeps freed memory (``models.memory``) before it loads a model."""

from __future__ import annotations

import pytest

import service.inference.pool as pool_module
from models.memory import keep_freed_memory
from service.metrics import ServiceMetrics

glibc = pytest.mark.skipif(not keep_freed_memory(), reason="the C library is not glibc")


@glibc
def test_the_serving_pool_keeps_freed_memory_before_it_loads_a_model(
    checkpoints, make_settings, monkeypatch
) -> None:
    calls: list[int] = []
    loads = pool_module.load_checkpoint
    monkeypatch.setattr(pool_module, "keep_freed_memory", lambda: calls.append(len(calls)))
    monkeypatch.setattr(
        pool_module, "load_checkpoint", lambda *args: calls.append(-1) or loads(*args)
    )
    pool = pool_module.ClassifierPool(make_settings(), ServiceMetrics())
    try:
        pool.load()
    finally:
        pool.decode_pool.shutdown(wait=True)
    assert calls[0] == 0 and -1 in calls[1:]  # kept first, then the models loaded
