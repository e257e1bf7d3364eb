"""POST /v1/admin/model/reload: a verified swap, a refused bundle keeps the old model serving,
and no request fails while models change."""

from __future__ import annotations

import shutil
import threading

import pytest
from fastapi.testclient import TestClient

from models.registry import BUNDLE_FILE, Registry
from service.app import create_app
from service.model_holder import ModelHolder


@pytest.fixture
def registry(trained_registry, tmp_path) -> Registry:
    """A private copy of the trained registry, free to add versions to and break."""
    source, _ = trained_registry
    shutil.copytree(source.root, tmp_path / "registry")
    return Registry(tmp_path / "registry")


@pytest.fixture
def own_client(db, settings, registry):
    holder = ModelHolder(registry, probe_channel="电话客服")
    # The rate limiter is not under test here; four hammering threads on a fast machine exceed it.
    app = create_app(settings.model_copy(update={"registry": registry.root, "rate_limit_per_second": 0}),
                     database=db, model=holder)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, holder


def _second_version(registry: Registry) -> str:
    """The champion again under a new version id, promoted."""
    bundle = registry.load("current")
    card = {k: v for k, v in registry.card("current").items()
            if k not in ("version", "created_at", "bundle_sha256", "bundle_bytes")}
    version = registry.save(bundle, card)
    registry.set_current(version)
    return version


def _metric(client, name: str) -> str:
    return "\n".join(line for line in client.get("/metrics").text.splitlines() if line.startswith(name))


def test_reload_swaps_to_the_new_champion(own_client, h, registry):
    client, holder = own_client
    old = holder.version
    new = _second_version(registry)
    r = client.post("/v1/admin/model/reload", headers=h["admin"])
    assert r.status_code == 200, r.text
    assert r.json() == {"previous_version": old, "version": new, "changed": True}
    assert client.post("/v1/predict", json={"text": "信用卡年费"}, headers=h["admin"]).json()["model_version"] == new
    info = _metric(client, "xiaobao_model_info")
    assert f'version="{new}"' in info and f'version="{old}"' not in info  # new may be old + "-1"
    assert client.get("/readyz").json()["model_version"] == new


def test_reloading_the_same_version_reports_no_change(own_client, h):
    client, holder = own_client
    r = client.post("/v1/admin/model/reload", headers=h["admin"])
    assert r.status_code == 200 and r.json()["changed"] is False and r.json()["version"] == holder.version


def test_a_corrupt_bundle_is_refused_and_the_old_model_keeps_serving(own_client, h, registry):
    client, holder = own_client
    old = holder.version
    new = _second_version(registry)
    path = registry.folder(new) / BUNDLE_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    r = client.post("/v1/admin/model/reload", headers=h["admin"])
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "model_refused" and "truncated" in r.json()["error"]["message"]
    assert r.json()["error"]["serving"] == old
    r = client.post("/v1/predict", json={"text": "信用卡年费"}, headers=h["intake"])
    assert r.status_code == 200 and r.json()["model_version"] == old
    assert 'result="refused"' in _metric(client, "xiaobao_model_reloads_total")


def test_a_model_that_fails_its_test_prediction_is_refused(own_client, h, registry, monkeypatch):
    client, holder = own_client
    old = holder.version
    _second_version(registry)

    def broken(self, *args, **kwargs):
        raise ValueError("feature size mismatch")

    from models.bundle import ModelBundle

    monkeypatch.setattr(ModelBundle, "predict", broken)
    r = client.post("/v1/admin/model/reload", headers=h["admin"])
    monkeypatch.undo()
    assert r.status_code == 422 and "test prediction" in r.json()["error"]["message"]
    assert holder.version == old


def test_no_current_model_is_a_409(own_client, h, registry):
    client, holder = own_client
    registry.state_path.unlink()
    r = client.post("/v1/admin/model/reload", headers=h["admin"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_current_model"
    assert client.post("/v1/predict", json={"text": "x"}, headers=h["intake"]).status_code == 200


def test_reload_is_for_admins_only(own_client, h):
    client, _ = own_client
    for scope in ("intake", "protection", "department:信用卡中心"):
        assert client.post("/v1/admin/model/reload", headers=h[scope]).status_code == 403
    assert client.post("/v1/admin/model/reload").status_code == 401


def test_requests_never_fail_during_reloads(own_client, h, registry):
    client, _ = own_client
    versions = {_second_version(registry)}
    stop = threading.Event()
    failures: list[str] = []
    served: set[str] = set()

    def hammer(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            r = client.post("/v1/complaints", json={
                "external_id": f"LOAD-{n}-{i}", "text": "信用卡被重复收取年费，要求退还", "channel": "手机银行",
                "branch": "营业部", "received_at": "2026-05-06T10:00:00"}, headers=h["intake"])
            if r.status_code != 201:
                failures.append(f"{r.status_code} {r.text[:200]}")
            else:
                served.add(r.json()["prediction"]["model_version"])

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            assert client.post("/v1/admin/model/reload", headers=h["admin"]).status_code == 200
            versions.add(_second_version(registry))
        assert client.post("/v1/admin/model/reload", headers=h["admin"]).status_code == 200
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:3]
    assert len(served) >= 2  # requests really ran across swaps
