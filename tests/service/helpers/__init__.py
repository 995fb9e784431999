"""Helpers the service tests share: images and hostile files, checkpoints, servers in a
subprocess, robustness-check jobs, a throwaway PostgreSQL. Test modules import these,
never each other."""
