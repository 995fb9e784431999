"""The decode worker process loads no web framework and no torch: it starts fast and small,
and a hostile file meets only the decoder."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.service.helpers.servers import ROOT

HEAVY = ("fastapi", "starlette", "uvicorn", "torch")


def test_the_decode_worker_process_loads_neither_a_web_framework_nor_torch() -> None:
    # The worker as the service starts it (``python -m``), answering its ready line, then
    # reporting the modules it holds once its input closes.
    probe = (
        "import atexit, json, runpy, sys\n"
        "atexit.register(lambda: sys.stderr.write(json.dumps(sorted(sys.modules))))\n"
        "sys.argv = ['decode_worker', '--max-memory-bytes', str(1 << 30),\n"
        "            '--recycle-rss-bytes', str(1 << 29)]\n"
        "runpy.run_module('service.sanitize.decode_worker', run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        input=b"",
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b'{"ready": true}\n'
    modules = json.loads(done.stderr.decode().strip().splitlines()[-1])
    assert "service.sanitize.imaging" in modules  # it did load what it needs
    loaded = [m for m in modules if m.split(".")[0] in HEAVY]
    assert loaded == []
