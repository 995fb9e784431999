"""``python -m service.healthcheck``: exit 0 when the local service is ready, 1 otherwise.

For container HEALTHCHECKs: the image has no curl, and the port comes from the
same QUSEC_PORT setting the service reads.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("QUSEC_PORT", "8000")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        sys.stderr.write(f"not ready: {exc}\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
