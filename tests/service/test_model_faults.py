"""Model faults: a corrupt, truncated, wrong-version, unreadable or missing bundle on
POST /v1/admin/model/reload is refused with an error naming the fault, while the old model keeps
serving (requests during the attempts included) and /readyz tells the truth; a service that starts
without a model is not ready until a reload loads one."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading

import pytest
from fastapi.testclient import TestClient

from models.registry import Registry
from service.app import create_app
from service.model_holder import ModelHolder
from tests.service.conftest import bearer


def _copy(registry: Registry, version: str, name: str) -> tuple[str, object]:
    src = registry.folder(version)
    dst = registry.versions_dir / name
    shutil.copytree(src, dst)
    return name, dst


def _corrupt(folder) -> None:
    data = bytearray((folder / "bundle.joblib").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "bundle.joblib").write_bytes(bytes(data))


def _truncate(folder) -> None:
    path = folder / "bundle.joblib"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _wrong_version(folder) -> None:
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    card["format_version"] = 999
    (folder / "card.json").write_text(json.dumps(card), encoding="utf-8")


def _unreadable_but_signed(folder) -> None:
    # garbage whose size and sha256 the card records: only unpickling can tell
    garbage = b"not a pickle at all" * 100
    (folder / "bundle.joblib").write_bytes(garbage)
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    card.update(bundle_bytes=len(garbage), bundle_sha256=hashlib.sha256(garbage).hexdigest())
    (folder / "card.json").write_text(json.dumps(card), encoding="utf-8")


def _missing(folder) -> None:
    (folder / "bundle.joblib").unlink()


FAULTS = {"corrupt": (_corrupt, "sha256 does not match"), "truncated": (_truncate, "truncated"),
          "wrong-version": (_wrong_version, "bundle format 999"), "unreadable": (_unreadable_but_signed, "cannot be read"),
          "missing": (_missing, "is missing")}


@pytest.fixture
def own_registry(trained_registry, tmp_path) -> Registry:
    registry, _ = trained_registry
    root = tmp_path / "registry"
    shutil.copytree(registry.root, root)
    return Registry(root)


def test_a_bad_bundle_is_refused_and_the_old_model_keeps_serving(db, settings, keys, own_registry):
    holder = ModelHolder(own_registry, probe_channel="电话客服")
    holder.reload()
    good = holder.version
    app = create_app(settings.model_copy(update={"registry": own_registry.root, "rate_limit_per_second": 0}),
                     database=db, model=holder)
    with TestClient(app, raise_server_exceptions=False) as client:
        admin, intake = bearer(keys["admin"]), bearer(keys["intake"])
        stop, answers = threading.Event(), []

        def predicting() -> None:  # requests during the reload attempts must all be answered by the old model
            while not stop.is_set():
                r = client.post("/v1/predict", json={"text": "信用卡年费重复扣款"}, headers=intake)
                answers.append((r.status_code, r.json().get("model_version")))

        thread = threading.Thread(target=predicting)
        thread.start()
        try:
            for name, (fault, words) in FAULTS.items():
                version, folder = _copy(own_registry, good, f"99990101-{name}")
                fault(folder)
                own_registry.set_current(version)
                r = client.post("/v1/admin/model/reload", headers=admin)
                assert r.status_code == 422, (name, r.text)
                error = r.json()["error"]
                assert error["code"] == "model_refused" and words in error["message"], (name, error)
                assert error["serving"] == good
                ready = client.get("/readyz")
                assert ready.status_code == 200 and ready.json()["model_version"] == good
            own_registry.set_current(good)
            assert client.post("/v1/admin/model/reload", headers=admin).json()["changed"] is False
        finally:
            stop.set()
            thread.join()
        assert answers and all(a == (200, good) for a in answers), set(answers)
        metrics = client.get("/metrics").text
        assert f'xiaobao_model_reloads_total{{result="refused"}} {float(len(FAULTS))}' in metrics
        assert f'xiaobao_model_info{{version="{good}"}} 1.0' in metrics


def test_a_registry_that_names_no_model_is_a_409_and_serving_goes_on(db, settings, keys, own_registry):
    holder = ModelHolder(own_registry, probe_channel="电话客服")
    holder.reload()
    state = json.loads(own_registry.state_path.read_text(encoding="utf-8"))
    own_registry.state_path.write_text(json.dumps({**state, "current": None}), encoding="utf-8")
    app = create_app(settings.model_copy(update={"registry": own_registry.root}), database=db, model=holder)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/v1/admin/model/reload", headers=bearer(keys["admin"]))
        assert r.status_code == 409 and r.json()["error"]["code"] == "no_current_model"
        assert client.get("/readyz").status_code == 200


def test_readyz_is_503_until_a_model_is_loaded(db, settings, keys, own_registry, tmp_path):
    empty = Registry(tmp_path / "empty")
    app = create_app(settings.model_copy(update={"registry": empty.root}), database=db)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["model_version"] is None
        assert any("model not loaded" in reason for reason in r.json()["reasons"])
        r = client.post("/v1/predict", json={"text": "信用卡年费"}, headers=bearer(keys["intake"]))
        assert r.status_code == 503 and r.headers["Retry-After"]
        assert client.post("/v1/admin/model/reload", headers=bearer(keys["admin"])).status_code == 409
        # a champion appears (trained elsewhere): the reload serves it and the service becomes ready
        shutil.copytree(own_registry.root, empty.root, dirs_exist_ok=True)
        r = client.post("/v1/admin/model/reload", headers=bearer(keys["admin"]))
        assert r.status_code == 200 and r.json()["previous_version"] is None
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/predict", json={"text": "信用卡年费"}, headers=bearer(keys["intake"])).status_code == 200
