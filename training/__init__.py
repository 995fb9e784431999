"""Offline training: dataset readers, the training loop, and the CLI that writes checkpoints."""
