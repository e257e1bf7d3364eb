import json
import shutil

import joblib
import pytest

from models.registry import BUNDLE_FILE, CARD_FILE, ModelLoadError, Registry
from training.data import DataError, load_dataset
from training.fit import TrainParams
from training.pipeline import PromotionRefused, promote, train


@pytest.fixture(scope="module")
def small_data(demo_corpus, tmp_path_factory):
    """600 demo rows: enough for every head, quick to train."""
    import pandas as pd

    frame = pd.read_csv(demo_corpus).sample(600, random_state=1)
    path = tmp_path_factory.mktemp("data") / "small.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained_once(small_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("trained-once") / "reg"
    return root, train(load_dataset(small_data), TrainParams(), Registry(root)).version


@pytest.fixture()
def registry_with_version(tmp_path, trained_once):
    """A private copy of a registry holding one trained version: tests corrupt its files."""
    root, version = trained_once
    shutil.copytree(root, tmp_path / "reg")
    return Registry(tmp_path / "reg"), version


def test_card_records_what_a_reviewer_needs(registry_with_version):
    registry, version = registry_with_version
    card = registry.card(version)
    for key in ("data", "label_sets", "metrics", "params", "library_versions", "created_at", "bundle_sha256"):
        assert key in card
    assert len(card["data"]["sha256"]) == 64
    assert set(card["heads"]) == {"category", "cause", "risk"}
    assert card["metrics"]["validation"]["category"]["macro_f1"] > 0


def test_load_verifies_and_predicts(registry_with_version):
    registry, version = registry_with_version
    bundle = registry.load(version)
    assert bundle.version == version
    assert bundle.predict(["信用卡被盗刷"])[0]["category"]["label"]


def test_corrupt_bundle_is_refused_with_a_sentence(registry_with_version):
    registry, version = registry_with_version
    path = registry.folder(version) / BUNDLE_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256 does not match"):
        registry.load(version)


def test_truncated_bundle_is_refused(registry_with_version):
    registry, version = registry_with_version
    path = registry.folder(version) / BUNDLE_FILE
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="truncated"):
        registry.load(version)


def test_missing_bundle_is_refused(registry_with_version):
    registry, version = registry_with_version
    (registry.folder(version) / BUNDLE_FILE).unlink()
    with pytest.raises(ModelLoadError, match="bundle.joblib is missing"):
        registry.load(version)


def test_incompatible_library_version_is_refused(registry_with_version):
    registry, version = registry_with_version
    card_path = registry.folder(version) / CARD_FILE
    card = json.loads(card_path.read_text())
    card["library_versions"]["scikit-learn"] = "0.24.2"
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match=r"incompatible libraries: scikit-learn 0.24.2 \(trained\)"):
        registry.load(version)


def test_wrong_format_version_is_refused(registry_with_version):
    registry, version = registry_with_version
    card_path = registry.folder(version) / CARD_FILE
    card = json.loads(card_path.read_text())
    card["format_version"] = 99
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="bundle format 99 is not the supported format"):
        registry.load(version)


def test_a_pickle_of_something_else_is_refused(registry_with_version):
    from models.registry import sha256_file

    registry, version = registry_with_version
    folder = registry.folder(version)
    joblib.dump({"not": "a bundle"}, folder / BUNDLE_FILE)
    card = json.loads((folder / CARD_FILE).read_text())
    card["bundle_sha256"] = sha256_file(folder / BUNDLE_FILE)
    card["bundle_bytes"] = (folder / BUNDLE_FILE).stat().st_size
    (folder / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="does not hold a model bundle"):
        registry.load(version)


def test_unknown_version_and_empty_registry(tmp_path):
    registry = Registry(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="no current model"):
        registry.load("current")
    with pytest.raises(ModelLoadError, match="no model version 'v1'"):
        registry.load("v1")


def test_promote_refuses_a_worse_challenger_and_rollback_restores(tmp_path, small_data):
    registry = Registry(tmp_path / "reg")
    ds = load_dataset(small_data)
    good = train(ds, TrainParams(), registry).version
    assert promote(registry, good)["promoted"]
    # A challenger that cannot learn much: almost no features and heavy regularisation.
    weak_params = TrainParams(C=0.001, n_features=2**6, risk_C_text=0.0001)
    weak = train(load_dataset(small_data), weak_params, registry).version
    with pytest.raises(PromotionRefused, match="scores worse than champion"):
        promote(registry, weak)
    assert registry.current() == good
    assert promote(registry, weak, force=True)["forced"] is True
    assert registry.current() == weak
    bad, restored = registry.rollback()
    assert (bad, restored) == (weak, good)
    assert registry.current() == good
    with pytest.raises(ModelLoadError, match="no earlier champion"):
        registry.rollback()


def test_version_prefix_resolves(registry_with_version):
    registry, version = registry_with_version
    assert registry.resolve(version[:15]).name == version


def test_promotion_compares_on_rows_neither_model_trained_on(tmp_path, small_data):
    """A challenger trained on more data has another validation split; its rows that the champion
    trained on are left out of the comparison, which they would tilt towards the champion."""
    import pandas as pd

    frame = pd.read_csv(small_data)
    first, everything = tmp_path / "first.csv", tmp_path / "everything.csv"
    frame.iloc[:300].to_csv(first, index=False)
    frame.to_csv(everything, index=False)
    registry = Registry(tmp_path / "reg")
    champion = train(load_dataset(first), TrainParams(), registry).version
    promote(registry, champion)
    assert len(registry.trained_on(champion)) == 240

    challenger = train(load_dataset(everything), TrainParams(), registry).version
    result = promote(registry, challenger, force=True)
    left_out = result["left_out"]["rows"]
    assert 0 < left_out < 120
    assert f"{120 - left_out} rows the champion did not train on" in result["evaluated_on"]

    registry.rollback()
    again = train(load_dataset(first), TrainParams(), registry).version  # the champion's own split
    assert "left_out" not in promote(registry, again)


def test_promotion_with_too_few_fair_rows_asks_for_data(tmp_path, small_data):
    import pandas as pd

    reordered = tmp_path / "reordered.csv"
    pd.read_csv(small_data).iloc[:200].sample(frac=1.0, random_state=7).to_csv(reordered, index=False)
    registry = Registry(tmp_path / "reg")
    champion = train(load_dataset(small_data), TrainParams(), registry).version
    promote(registry, champion)
    challenger = train(load_dataset(reordered), TrainParams(), registry).version
    with pytest.raises(DataError, match="too few to compare them; pass --data FILE"):
        promote(registry, challenger)
    assert registry.current() == champion
