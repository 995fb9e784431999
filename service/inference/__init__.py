"""Inference: the classifier pipeline in named stages, micro-batching and the model pool.

``classifier`` is one checkpoint as identify -> decode -> quantize -> batch -> predict
-> encode, taking bytes and returning a result, never a request; ``batching`` runs
whole batches on a dedicated thread; ``pool`` holds the loaded models, the decode
threads and processes, the in-flight count and readiness.
"""
