"""Typed settings from QUSEC_* variables, and the command line on top of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from service import settings as settings_module
from service.cli import build_settings, main, parse_args
from service.settings import BUNDLED_CHECKPOINTS, ServiceSettings, bundled_checkpoints


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


def test_unknown_variables_and_arguments_are_refused_naming_the_closest_setting(
    monkeypatch,
) -> None:
    monkeypatch.setenv("QUSEC_ROBUSTNES_DB", "/tmp/jobs.sqlite3")  # one letter short
    with pytest.raises(
        ValidationError, match="QUSEC_ROBUSTNES_DB; did you mean QUSEC_ROBUSTNESS_DB"
    ):
        ServiceSettings()
    monkeypatch.delenv("QUSEC_ROBUSTNES_DB")
    with pytest.raises(ValidationError):
        ServiceSettings(unknown_knob=1)


def test_the_cli_names_an_unknown_variable_and_exits_2(monkeypatch, capsys) -> None:
    monkeypatch.setenv("QUSEC_MAX_BATCH_SIZ", "8")
    assert main(["--checkpoint", "x"]) == 2
    assert "did you mean QUSEC_MAX_BATCH_SIZE" in capsys.readouterr().err


def test_command_line_overrides_environment(monkeypatch) -> None:
    monkeypatch.setenv("QUSEC_PORT", "9000")
    monkeypatch.setenv("QUSEC_CHECKPOINTS", "from-env")
    args = parse_args(["--port", "8123", "--checkpoint", "a", "--checkpoint", "b"])
    settings = build_settings(args)
    assert settings.port == 8123
    assert settings.checkpoints == [Path("a"), Path("b")]
    assert build_settings(parse_args([])).checkpoints == [Path("from-env")]


def test_without_checkpoints_the_bundled_ones_that_exist_are_served() -> None:
    settings = build_settings(parse_args([]))
    assert settings.checkpoints == bundled_checkpoints()
    assert settings.checkpoints, "the repository bundles at least one checkpoint"
    assert all((folder / "manifest.json").is_file() for folder in settings.checkpoints)
    assert settings.checkpoints[0].name == BUNDLED_CHECKPOINTS[0]


@pytest.mark.parametrize("off", ["none", "None", "", " "])
def test_published_reports_default_to_docs_results_and_none_turns_them_off(
    monkeypatch, off
) -> None:
    assert ServiceSettings().published_reports == settings_module.BUNDLED_REPORTS_DIR
    assert settings_module.BUNDLED_REPORTS_DIR.name == "results"
    monkeypatch.setenv("QUSEC_PUBLISHED_REPORTS", "/srv/reports")
    assert ServiceSettings().published_reports == Path("/srv/reports")
    monkeypatch.setenv("QUSEC_PUBLISHED_REPORTS", off)
    assert ServiceSettings().published_reports is None


def test_a_bundled_name_whose_folder_is_absent_is_skipped(monkeypatch, tmp_path) -> None:
    (tmp_path / "present").mkdir()
    (tmp_path / "present" / "manifest.json").write_text("{}")
    monkeypatch.setattr(settings_module, "BUNDLED_CHECKPOINTS_DIR", tmp_path)
    monkeypatch.setattr(settings_module, "BUNDLED_CHECKPOINTS", ("absent", "present"))
    assert bundled_checkpoints() == [tmp_path / "present"]


def test_cli_refuses_to_start_without_any_checkpoint(monkeypatch, capsys) -> None:
    monkeypatch.setattr(settings_module, "BUNDLED_CHECKPOINTS", ())
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


def test_no_test_reads_a_qusec_variable_the_service_refuses() -> None:
    """A ``QUSEC_*`` variable the tests read but the service does not know would, left
    exported in a shell, stop the service there (``unknown setting``); the tests take such
    things as pytest options instead (tests/conftest.py)."""
    tests = Path(__file__).resolve().parents[1]
    read = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()\s*["'](QUSEC_\w+)""")
    known = {f"QUSEC_{name.upper()}" for name in ServiceSettings.model_fields}
    unknown = {
        f"{path.relative_to(tests)}: {name}"
        for path in tests.rglob("*.py")
        for name in read.findall(path.read_text())
        if name not in known
    }
    assert unknown == set()
