"""The deployed model: the Cleverhans basic CNN, CQ/TQ input quantizers, checkpoints.

This package imports nothing else of ours; training, robustness and the service build on it.
"""
