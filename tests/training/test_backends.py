"""Every backend trains, registers, loads back through the registry's checks and serves the same shape;
the fine-tuned weights file is verified like the bundle; an unusable --encoder is one clear line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from models.registry import BUNDLE_FILE, CARD_FILE, ModelLoadError, Registry
from models.settings import current
from tests.conftest import e5_checkpoint
from training.common import FinetuneParams, TrainParams
from training.data import load_dataset
from training.pipeline import cross_validate, train

TEXTS = ["信用卡年费被重复扣了两次，客服一直推诿，我要投诉到监管", "my card was charged twice", "理财亏损"]
FIELDS = [{"channel": "信访", "repeat_count": 3, "amount": 2000.0}, {}, {"channel": "网点"}]
SMALL_FT = FinetuneParams(epochs=1, lr=1e-3, max_length=48)


def params_for(backend: str, encoder) -> TrainParams:
    return TrainParams(backend=backend, encoder=None if backend == "linear" else str(encoder), finetune=SMALL_FT)


@pytest.fixture(scope="module", params=["linear", "hybrid", "finetune"])
def trained(request, small_demo, tiny_encoder, tmp_path_factory):
    registry = Registry(tmp_path_factory.mktemp(f"reg-{request.param}"))
    result = train(load_dataset(small_demo), params_for(request.param, tiny_encoder), registry)
    return request.param, registry, result.version


def test_round_trip_through_the_registry(trained):
    backend, registry, version = trained
    bundle = registry.load(version)  # sha256, library versions, smoke prediction
    again = registry.load(version)
    a, b = bundle.predict(TEXTS, FIELDS), again.predict(TEXTS, FIELDS)
    for x, y in zip(a, b, strict=True):
        for head in ("category", "cause"):
            assert x[head]["label"] == y[head]["label"]
            assert x[head]["probability"] == pytest.approx(y[head]["probability"], abs=1e-4)
        assert x["risk"]["score"] == pytest.approx(y["risk"]["score"], abs=1e-4)
    card = registry.card(version)
    assert card["params"]["backend"] == backend and set(card["heads"]) == {"category", "cause", "risk"}
    assert ("weight_files" in card) == (backend == "finetune")
    if backend != "linear":
        assert card["encoder"]["sha256"] and bundle.meta["encoder"]["path"]


def test_the_service_serves_every_backend_unchanged(trained):
    from service.model_holder import verify

    backend, registry, version = trained
    bundle = registry.load(version)
    verify(bundle, "电话客服")  # the API's response schema, with fields and explanations
    [p] = bundle.predict([TEXTS[0]], [FIELDS[0]], explain=True)
    assert p["model_version"] == version
    if backend == "finetune":  # attribution phrases are spans of the text (n-gram ones may skip stop words)
        for head in ("category", "cause", "risk"):
            assert all(ph["phrase"] in TEXTS[0] for ph in p[head]["phrases"])


@pytest.mark.parametrize("trained", ["finetune"], indirect=True)
def test_finetuned_version_stores_only_changed_weights(trained):
    _, registry, version = trained
    folder = registry.folder(version)
    card = registry.card(version)
    [(name, entry)] = card["weight_files"].items()
    assert (folder / name).stat().st_size == entry["bytes"]
    assert card["finetune"]["trainable_parameters"] < card["finetune"]["total_parameters"]
    assert card["finetune"]["validation"]["category"]["macro_f1"] >= 0


def _copy(registry: Registry, version: str, tmp_path) -> Registry:
    other = Registry(tmp_path / "copy")
    shutil.copytree(registry.folder(version), other.versions_dir / version)
    return other


@pytest.mark.parametrize("trained", ["finetune"], indirect=True)
@pytest.mark.parametrize("damage", ["flip", "truncate", "remove", "uncarded"])
def test_damaged_finetuned_weights_are_refused(trained, tmp_path, damage):
    _, registry, version = trained
    reg = _copy(registry, version, tmp_path)
    folder = reg.folder(version)
    path = folder / "finetune.safetensors"
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        message = "sha256 does not match the model card; the weights are corrupt"
    elif damage == "truncate":
        path.write_bytes(bytes(data[:1000]))
        message = "truncated or was replaced"
    elif damage == "remove":
        path.unlink()
        message = "finetune.safetensors is missing"
    else:
        card = json.loads((folder / CARD_FILE).read_text())
        del card["weight_files"]
        (folder / CARD_FILE).write_text(json.dumps(card))
        message = "card records no sha256 for finetune.safetensors"
    with pytest.raises(ModelLoadError, match=message) as err:
        reg.load(version)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("trained", ["hybrid", "finetune"], indirect=True)
def test_a_missing_base_encoder_is_one_clear_line(trained, tmp_path):
    backend, registry, version = trained
    bundle = registry.load(version)
    assert (registry.folder(version) / BUNDLE_FILE).stat().st_size < 5_000_000  # weights never inside
    ref = bundle.encoder if backend == "hybrid" else bundle.finetuned.base
    copy = tmp_path / "encoder_copy"
    shutil.copytree(ref.path, copy, ignore=shutil.ignore_patterns("onnx"))
    ref.path = copy  # the bundle now references the copy (path + sha256)
    other = Registry(tmp_path / "reg", current().but(encoder=tmp_path / "nowhere"))  # nor in the fallback folder
    moved = other.save(bundle, {"data": {}})
    shutil.rmtree(copy)
    with pytest.raises(ModelLoadError, match="is not here") as err:
        other.load(moved)
    assert "\n" not in str(err.value) and str(copy) in str(err.value)


@pytest.mark.parametrize("trained", ["hybrid", "finetune"], indirect=True)
def test_a_registry_finds_a_moved_base_encoder_in_its_own_settings(trained, tmp_path, monkeypatch):
    """The registry's model settings (given when it was made), not a variable set since, say where to look."""
    backend, registry, version = trained
    bundle = registry.load(version)
    ref = bundle.encoder if backend == "hybrid" else bundle.finetuned.base
    copy, spare = tmp_path / "encoder_copy", tmp_path / "spare" / "encoder"
    for folder in (copy, spare):
        shutil.copytree(ref.path, folder, ignore=shutil.ignore_patterns("onnx"))
    ref.path = copy
    other = Registry(tmp_path / "reg", current().but(encoder=spare, cache=tmp_path / "cache"))
    moved = other.save(bundle, {"data": {}})
    shutil.rmtree(copy)
    monkeypatch.setenv("XIAOBAO_ENCODER", str(tmp_path / "nowhere"))
    back = other.load(moved)
    found = back.encoder if backend == "hybrid" else back.finetuned.base
    assert found.path == spare.absolute()
    [p] = back.predict([TEXTS[0]], [FIELDS[0]])
    assert p["model_version"] == moved
    if backend == "hybrid":  # its embeddings were cached in the registry's cache folder
        assert found.cache_dir == tmp_path / "cache" and any((tmp_path / "cache").glob("*.sqlite"))


def test_finetune_cross_validates(small_demo, tiny_encoder):
    params = TrainParams(backend="finetune", encoder=str(tiny_encoder),
                         finetune=FinetuneParams(epochs=1, max_steps=4, max_length=32))
    m = cross_validate(load_dataset(small_demo), params, folds=2)
    assert m["n"] == 240 and len(m["category"]["per_fold"]) == 2 and "roc_auc" in m["risk"]


@pytest.mark.parametrize("backend", ["hybrid", "finetune"])
@pytest.mark.parametrize("make", ["missing", "empty"])
def test_encoder_that_is_not_a_checkpoint_is_one_line(backend, make, small_demo, tmp_path, capsys):
    from xiaobao.cli import main

    folder = tmp_path / "nothing"
    if make == "empty":
        folder.mkdir()
    for command in ("train", "cv"):
        rc = main([command, "--backend", backend, "--encoder", str(folder), "--data", str(small_demo),
                   "--registry", str(tmp_path / "reg"), "--quiet"])
        lines = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(lines) == 1, lines
        assert lines[0].startswith(f"xiaobao {command}: ") and str(folder) in lines[0]
        assert ("does not exist" if make == "missing" else "is not an encoder checkpoint") in lines[0]
    assert not (tmp_path / "reg").exists()  # refused before anything was trained


def test_cli_trains_the_finetune_backend(small_demo, tiny_encoder, tmp_path, capsys):
    from xiaobao.cli import main

    rc = main(["train", "--backend", "finetune", "--encoder", str(tiny_encoder), "--data", str(small_demo),
               "--registry", str(tmp_path / "reg"), "--quiet", "--ft-epochs", "1", "--ft-max-length", "32",
               "--ft-batch-size", "32", "--ft-lr", "1e-3", "--device", "cpu"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["validation"]["risk"]["roc_auc"] > 0
    card = Registry(tmp_path / "reg").card(out["version"])
    assert card["params"]["finetune"]["max_length"] == 32 and card["finetune"]["device"] == "cpu"


# --- the real e5, only where `make encoder` built it ---------------------------------------------------
def test_hybrid_and_finetune_on_the_real_e5(small_demo, tmp_path):
    e5 = e5_checkpoint()
    registry = Registry(tmp_path / "reg", current().but(cache=tmp_path / "cache"))
    ds = load_dataset(small_demo)
    ds.frame = ds.frame.iloc[:48].reset_index(drop=True)
    params = TrainParams(backend="finetune", encoder=str(e5),
                         finetune=FinetuneParams(epochs=1, max_steps=2, max_length=32, batch_size=8))
    version = train(ds, params, registry).version
    bundle = registry.load(version)
    card = registry.card(version)
    size = card["weight_files"]["finetune.safetensors"]["bytes"]
    assert 50e6 < size < 120e6  # ~21M changed parameters, not the 118M of the whole model
    assert card["encoder"]["prefix"] == "passage: "
    [p] = bundle.predict([TEXTS[0]], [FIELDS[0]])
    assert p["category"]["phrases"] and all(ph["phrase"] in TEXTS[0] for ph in p["category"]["phrases"])
    hybrid = train(ds, TrainParams(backend="hybrid", encoder=str(e5)), registry).version
    assert registry.load(hybrid).predict(TEXTS[:1])[0]["risk"]["score"] >= 0
    assert np.isfinite(bundle.predict(TEXTS)[1]["risk"]["score"])
