"""The deployed model: architectures (built in, installed, or an exported program), CQ/TQ
input quantizers, normalization, checkpoints.

This package imports nothing else of ours; training, robustness and the service build on it.
"""
