"""Typed settings from QUSEC_* variables, and the command line on top of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.cli import build_settings, main, parse_args
from service.settings import ServiceSettings


def test_defaults_suit_a_small_cpu_host() -> None:
    settings = ServiceSettings()
    assert settings.checkpoints == []
    assert settings.device == "auto" and settings.torch_threads == 1
    assert settings.max_body_bytes == 5 * 1024 * 1024
    assert settings.enable_naive_endpoint is False


def test_environment_variables_are_read(monkeypatch) -> None:
    monkeypatch.setenv("QUSEC_CHECKPOINTS", "checkpoints/a, checkpoints/b")
    monkeypatch.setenv("QUSEC_DEVICE", "cpu")
    monkeypatch.setenv("QUSEC_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("QUSEC_MAX_BATCH_WAIT_SECONDS", "0.01")
    monkeypatch.setenv("QUSEC_ENABLE_NAIVE_ENDPOINT", "1")
    monkeypatch.setenv("QUSEC_LOG_LEVEL", "DEBUG")
    settings = ServiceSettings()
    assert settings.checkpoints == [Path("checkpoints/a"), Path("checkpoints/b")]
    assert settings.device == "cpu" and settings.max_batch_size == 16
    assert settings.max_batch_wait_seconds == 0.01
    assert settings.enable_naive_endpoint is True and settings.log_level == "debug"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("QUSEC_DEVICE", "tpu"),
        ("QUSEC_TORCH_THREADS", "0"),
        ("QUSEC_MAX_BODY_BYTES", "12"),
        ("QUSEC_MAX_IMAGE_PIXELS", "200000000"),
        ("QUSEC_RESIZE_POLICY", "crop"),
        ("QUSEC_MAX_BATCH_SIZE", "many"),
        ("QUSEC_QUEUE_SIZE", "2"),  # smaller than a batch
    ],
)
def test_invalid_values_are_refused(monkeypatch, name, value) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        ServiceSettings()


def test_unknown_variables_are_ignored_but_unknown_arguments_are_not(monkeypatch) -> None:
    monkeypatch.setenv("QUSEC_UNKNOWN_KNOB", "1")
    ServiceSettings()
    with pytest.raises(ValidationError):
        ServiceSettings(unknown_knob=1)


def test_command_line_overrides_environment(monkeypatch) -> None:
    monkeypatch.setenv("QUSEC_PORT", "9000")
    monkeypatch.setenv("QUSEC_CHECKPOINTS", "from-env")
    args = parse_args(["--port", "8123", "--checkpoint", "a", "--checkpoint", "b"])
    settings = build_settings(args)
    assert settings.port == 8123
    assert settings.checkpoints == [Path("a"), Path("b")]
    assert build_settings(parse_args([])).checkpoints == [Path("from-env")]


def test_cli_refuses_to_start_without_checkpoints(capsys) -> None:
    assert main([]) == 2
    assert "QUSEC_CHECKPOINTS" in capsys.readouterr().err


def test_cli_reports_invalid_configuration(capsys) -> None:
    assert main(["--checkpoint", "x", "--torch-threads", "0"]) == 2
    assert "torch_threads" in capsys.readouterr().err


def test_the_shared_job_store_settings(monkeypatch) -> None:
    defaults = ServiceSettings()
    assert defaults.jobs_url is None and defaults.robustness_run_jobs is True
    assert defaults.robustness_split_units is False
    monkeypatch.setenv("QUSEC_JOBS_URL", "postgresql://qusec:secret@db:5432/qusec")
    monkeypatch.setenv("QUSEC_ROBUSTNESS_RUN_JOBS", "false")
    monkeypatch.setenv("QUSEC_ROBUSTNESS_LEASE_SECONDS", "12")
    settings = ServiceSettings()
    assert settings.jobs_url.get_secret_value().endswith("@db:5432/qusec")
    assert "secret" not in repr(settings)  # the password stays out of logs and reprs
    assert settings.robustness_run_jobs is False and settings.robustness_lease_seconds == 12
    monkeypatch.setenv("QUSEC_JOBS_URL", "sqlite:///var/jobs.sqlite3")
    with pytest.raises(ValidationError, match="postgresql://"):
        ServiceSettings()


def test_the_worker_command_line(capsys) -> None:
    from service.jobs.worker import cli

    with pytest.raises(SystemExit) as exited:
        cli(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "qusec-worker" in text and "--loop" in text and "QUSEC_JOBS_URL" in text


def test_the_worker_refuses_bad_settings(monkeypatch) -> None:
    from service.jobs.worker import cli

    monkeypatch.setenv("QUSEC_ROBUSTNESS_LEASE_SECONDS", "0")
    with pytest.raises(SystemExit) as exited:
        cli(["--loop"])
    assert exited.value.code == 2
