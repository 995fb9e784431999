"""``python -m service``: see ``service.cli``."""

from service.cli import main

# Guarded: a supervisor's spawned workers import this module again, as ``__mp_main__``.
if __name__ == "__main__":
    raise SystemExit(main())
