"""Offline robustness suite: cleverhans attacks under four threat models, with honest reports.

``robustness.runner.run_suite`` is the entry point for the CLI and for the service's job
runner; ``robustness.attacks.ATTACKS`` lists the attacks and ``robustness.threats`` the
threat models. This package imports only ``models`` of ours.
"""
