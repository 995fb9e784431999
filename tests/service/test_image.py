"""The container image, really built and run with podman (or Docker).

No registry is needed: the base is a Debian bookworm root filesystem bootstrapped from Debian
packages by ``deploy/bootstrap-base.sh`` (mmdebstrap, the machine's own apt sources) and
imported under a local name, kept between runs. The image is built from the repository's
Dockerfile with that base as ``BASE_IMAGE`` and this machine's pip settings passed in (build
arguments, the CA bundle as the ``pip_ca`` secret, local wheel folders and ``file://`` indexes
mounted read-only into the build with podman). The container then classifies a real MNIST
digit and a real CIFAR-10 image from the evaluation subsets over HTTP, passes its health check,
runs as uid 10001 and stops cleanly.

Skips, saying why, when neither podman nor a running Docker engine is present, or when the base
is not cached and mmdebstrap is absent. ``TORCH_PIP_ARGS`` in the environment reaches the
torch install (a machine whose pip cannot find ``torch==2.13.0+cpu`` names PyTorch's CPU wheel
index there).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "deploy" / "bootstrap-base.sh"
# The base's name carries a digest of the script that makes it: a changed recipe, a new base.
BASE_IMAGE = (
    "localhost/qusec-base:bookworm-" + hashlib.sha256(BOOTSTRAP.read_bytes()).hexdigest()[:12]
)
IMAGE = "localhost/qusec:test"
CONTAINER = "qusec-image-test"
STOP_GRACE_SECONDS = 40  # compose's stop_grace_period
PIP_KEYS = ("index-url", "extra-index-url", "find-links", "trusted-host", "cert")

pytestmark = pytest.mark.slow


def run(*argv: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(argv[:3])} ... exited {result.returncode}:\n{result.stderr[-4000:]}"
        )
    return result


def container_engine() -> str | None:
    """podman, or docker when its engine answers."""
    if shutil.which("podman"):
        return "podman"
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return "docker"
    return None


def engine_run_options(engine: str) -> list[str]:
    """What podman needs on machines like these: runc (crun refuses their hybrid cgroups) and
    resource limits it may set (its defaults exceed the caller's open-files limit, and this
    sandbox refuses a process limit above the kernel's pid_max)."""
    if engine != "podman":
        return []
    options = ["--runtime", "runc"] if shutil.which("runc") else []
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    for flag, limit, cap in (
        ("nofile", resource.RLIMIT_NOFILE, 1 << 20),
        ("nproc", resource.RLIMIT_NPROC, pid_max),
    ):
        hard = resource.getrlimit(limit)[1]
        value = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
        options += ["--ulimit", f"{flag}={value}:{value}"]
    return options


def image_exists(engine: str, name: str) -> bool:
    return run(engine, "image", "inspect", name, check=False).returncode == 0


def host_pip_settings() -> dict[str, str]:
    """The pip options this machine's pip uses (environment over its configuration files)."""
    listing = run(sys.executable, "-m", "pip", "config", "list").stdout
    rank = {":env:": 0, "site": 1, "user": 2, "global": 3, "install": 3}
    found: dict[str, tuple[int, str]] = {}
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        section, _, option = key.rpartition(".")
        if option not in PIP_KEYS or section not in rank:
            continue
        value = " ".join(value.strip().strip("'\"").split())
        if option not in found or rank[section] < found[option][0]:
            found[option] = (rank[section], value)
    return {option: value for option, (_, value) in found.items()}


def local_folders(settings: dict[str, str]) -> list[str]:
    """Local wheel folders and file:// indexes in the settings; a simple index's files lie
    beside its simple/ folder, so the parent is what the build needs."""
    folders = []
    for option in ("index-url", "extra-index-url", "find-links"):
        for entry in settings.get(option, "").split():
            path = unquote(urlparse(entry).path) if entry.startswith("file:") else entry
            if not path.startswith("/") or not Path(path).exists():
                continue
            folder = Path(path) if Path(path).is_dir() else Path(path).parent
            if folder.name == "simple":
                folder = folder.parent
            folders.append(str(folder))
    return sorted(set(folders))


def build_arguments(engine: str) -> list[str]:
    settings = host_pip_settings()
    argv = ["--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--network=host"]
    for option in ("index-url", "extra-index-url", "find-links", "trusted-host"):
        if settings.get(option):
            name = "PIP_" + option.upper().replace("-", "_")
            argv += ["--build-arg", f"{name}={settings[option]}"]
    if os.environ.get("TORCH_PIP_ARGS"):
        argv += ["--build-arg", f"TORCH_PIP_ARGS={os.environ['TORCH_PIP_ARGS']}"]
    if settings.get("cert") and Path(settings["cert"]).is_file():
        argv += ["--secret", f"id=pip_ca,src={settings['cert']}"]
    if engine == "podman":
        # The OCI format would drop the HEALTHCHECK.
        argv += ["--format", "docker"]
        for folder in local_folders(settings):
            argv += ["--volume", f"{folder}:{folder}:ro"]
    return argv


def ensure_base(engine: str) -> None:
    if image_exists(engine, BASE_IMAGE):
        return
    if not shutil.which("mmdebstrap"):
        pytest.skip(f"mmdebstrap not installed, and no cached base {BASE_IMAGE} to build on")
    started = time.monotonic()
    result = subprocess.run(
        [str(BOOTSTRAP), BASE_IMAGE],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "ENGINE": engine},
    )
    if result.returncode == 2:  # the script's "cannot here": no bookworm sources, no engine
        pytest.skip(result.stderr.strip().splitlines()[-1])
    assert result.returncode == 0, result.stderr[-4000:]
    print(f"base {BASE_IMAGE} bootstrapped in {time.monotonic() - started:.0f} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def state(engine: str) -> dict:
    out = run(engine, "inspect", "--format", "{{json .State}}", CONTAINER).stdout
    return json.loads(out)


def wait_until_ready(engine: str, base_url: str, deadline_s: float = 300) -> float:
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        if state(engine).get("Status") not in ("running", "created", "configured"):
            logs = run(engine, "logs", CONTAINER, check=False)
            pytest.fail(f"the container stopped before it was ready:\n{logs.stderr[-4000:]}")
        try:
            with urllib.request.urlopen(base_url + "/readyz", timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"not ready after {deadline_s:.0f} s")


def png(dataset: str, index: int) -> tuple[bytes, int]:
    """Image `index` of an evaluation subset (the official test set's first 1000) as PNG."""
    subset = np.load(ROOT / "data" / "eval" / f"{dataset}-test-first1000.npz")
    pixels, label = subset["images"][index], int(subset["labels"][index])
    image = (
        Image.fromarray(pixels[0], mode="L")
        if pixels.shape[0] == 1
        else Image.fromarray(pixels.transpose(1, 2, 0), mode="RGB")
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), label


def classify(base_url: str, body: bytes, model: str) -> dict:
    request = urllib.request.Request(
        f"{base_url}/classify?model={model}",
        data=body,
        headers={"Content-Type": "image/png"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
        return json.load(response)


def test_image_builds_serves_real_images_and_stops_cleanly() -> None:
    engine = container_engine()
    if engine is None:
        pytest.skip("neither podman nor a running Docker engine is available")
    ensure_base(engine)

    started = time.monotonic()
    build = subprocess.run(
        [engine, "build", *engine_run_options(engine), *build_arguments(engine)]
        + ["-t", IMAGE, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert build.returncode == 0, (build.stdout + build.stderr)[-6000:]
    print(f"image built in {time.monotonic() - started:.0f} s")

    image = json.loads(run(engine, "image", "inspect", IMAGE).stdout)[0]
    healthcheck = image.get("Healthcheck") or image["Config"].get("Healthcheck")
    assert healthcheck and "service.healthcheck" in healthcheck["Test"], "HEALTHCHECK dropped"
    assert image["Config"]["User"] == "10001"
    print(f"image size {image['Size'] / 1e9:.2f} GB")

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    run(engine, "rm", "--force", CONTAINER, check=False)
    run(
        engine,
        "run",
        "--detach",
        "--name",
        CONTAINER,
        *engine_run_options(engine),
        "--publish",
        f"127.0.0.1:{port}:8000",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--env",
        "QUSEC_WORKERS=1",
        "--stop-timeout",
        str(STOP_GRACE_SECONDS),
        IMAGE,
    )
    try:
        print(f"ready {wait_until_ready(engine, base_url):.1f} s after start")
        assert run(engine, "exec", CONTAINER, "id", "-u").stdout.strip() == "10001"

        # Real official test images, as a user would send them.
        for dataset, index, model in (("mnist", 0, "mnist-tq2"), ("cifar10", 0, "cifar10-tq4")):
            body, label = png(dataset, index)
            answer = classify(base_url, body, model)
            assert answer["model"]["name"] == model
            assert answer["label"] == label, f"{dataset} test image {index}: {answer}"

        if engine == "podman":
            # No systemd here to schedule it; run it on demand.
            assert run(engine, "healthcheck", "run", CONTAINER, check=False).returncode == 0
        else:
            deadline = time.monotonic() + 120
            while state(engine).get("Health", {}).get("Status") != "healthy":
                assert time.monotonic() < deadline, state(engine).get("Health")
                time.sleep(1)

        # A clean stop: SIGTERM, graceful shutdown, exit 0 (a kill after the grace period
        # would exit 137).
        run(engine, "stop", "--time", str(STOP_GRACE_SECONDS), CONTAINER, timeout=120)
        final = state(engine)
        assert final["Status"] == "exited"
        assert final["ExitCode"] == 0, run(engine, "logs", CONTAINER, check=False).stderr[-4000:]
        assert not final.get("OOMKilled")
    finally:
        run(engine, "rm", "--force", CONTAINER, check=False)
