"""Settings come from XIAOBAO_* variables (and DATABASE_URL), with checked values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import DEFAULT_CHANNELS, Settings


def test_defaults(monkeypatch):
    for name in ("XIAOBAO_DATABASE_URL", "DATABASE_URL", "XIAOBAO_CHANNELS"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.database_url == "sqlite:///var/xiaobao.db"
    assert s.channels == DEFAULT_CHANNELS and len(s.channels) == 8
    assert (s.max_text_chars, s.predict_batch_max) == (20_000, 1000)
    assert len(s.categories) == 11 and len(s.causes) == 12
    assert s.alert_min_level == "高" and s.alert_channels == ["监管转办"]


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/x")
    assert Settings().database_url == "postgresql://db/x"
    monkeypatch.setenv("XIAOBAO_DATABASE_URL", "sqlite:///other.db")
    assert Settings().database_url == "sqlite:///other.db"  # the prefixed name wins
    assert Settings(database_url="sqlite:///arg.db").database_url == "sqlite:///arg.db"
    monkeypatch.setenv("XIAOBAO_CHANNELS", "柜面, 电话客服")
    assert Settings().channels == ["柜面", "电话客服"]
    monkeypatch.setenv("XIAOBAO_CHANNELS", '["柜面", "App"]')
    assert Settings().channels == ["柜面", "App"]
    monkeypatch.setenv("XIAOBAO_MAX_TEXT_CHARS", "500")
    assert Settings().max_text_chars == 500


@pytest.mark.parametrize("name, value", [
    ("XIAOBAO_CHANNELS", ""), ("XIAOBAO_MAX_TEXT_CHARS", "0"), ("XIAOBAO_TIMEZONE", "Mars/Olympus"),
    ("XIAOBAO_ALERT_MIN_LEVEL", "极高"), ("XIAOBAO_PREDICT_BATCH_MAX", "many"),
])
def test_bad_values_are_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_configured_channels_are_what_intake_accepts(db, holder, settings, h):
    from fastapi.testclient import TestClient

    from service.app import create_app

    custom = settings.model_copy(update={"channels": ["柜面", "App"]})
    with TestClient(create_app(custom, database=db, model=holder)) as c:
        assert c.post("/v1/predict", json={"text": "年费", "channel": "柜面"}, headers=h["intake"]).status_code == 200
        r = c.post("/v1/predict", json={"text": "年费", "channel": "电话客服"}, headers=h["intake"])
        assert r.status_code == 422 and "柜面, App" in r.json()["error"]["message"]


def test_model_folders_are_read_once_when_the_settings_are_made(monkeypatch, tmp_path):
    from models.settings import ModelSettings

    monkeypatch.setenv("XIAOBAO_REGISTRY", str(tmp_path / "reg"))
    monkeypatch.setenv("XIAOBAO_ENCODER", str(tmp_path / "enc"))
    monkeypatch.setenv("XIAOBAO_CACHE", str(tmp_path / "cache"))
    s = Settings()
    assert s.models == ModelSettings(tmp_path / "reg", tmp_path / "enc", tmp_path / "cache") == ModelSettings.from_env()
    for name in ("XIAOBAO_REGISTRY", "XIAOBAO_ENCODER", "XIAOBAO_CACHE"):
        monkeypatch.setenv(name, str(tmp_path / "changed"))
    assert s.models == ModelSettings(tmp_path / "reg", tmp_path / "enc", tmp_path / "cache")  # a running service
    given = Settings(registry=tmp_path / "given")  # an explicit registry wins; the rest still from the variables
    assert given.models == ModelSettings(tmp_path / "given", tmp_path / "changed", tmp_path / "changed")
    assert s.model_copy(update={"registry": tmp_path / "copy"}).models.registry == tmp_path / "copy"


def test_serve_passes_its_options_to_worker_processes_through_their_environment(monkeypatch, tmp_path):
    """`xiaobao serve --workers N` starts processes that read Settings() from the environment."""
    from service.cli import worker_process_environment

    url = f"sqlite:///{tmp_path}/serve.db"
    env = worker_process_environment(Settings(database_url=url, run_worker=True))
    assert env == {"XIAOBAO_DATABASE_URL": url, "XIAOBAO_RUN_WORKER": "true"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    child = Settings()
    assert child.database_url == url and child.run_worker is True
    monkeypatch.setenv("XIAOBAO_RUN_WORKER", "true")
    assert worker_process_environment(Settings(run_worker=False))["XIAOBAO_RUN_WORKER"] == "false"
