"""Risk levels calibrated on writers the model never saw: batch-held-out cross-fitting in fit_bundle, the
figures it records, the thresholds it chooses, the batch column, level metrics in evaluate, the model card."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from models.bundle import PredictConfig
from models.heads import RiskClassifier
from training.data import UNBATCHED, Columns, DataError, labelled, load_dataset
from training.evaluate import evaluate, level_metrics, levels_of
from training.fit import TrainParams, choose_thresholds, fit_bundle
from xiaobao.cli import main

LEVEL_KEYS = {"alerts", "alert_rate", "recall", "precision"}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def sample_csv(demo_corpus, tmp_path_factory):
    path = tmp_path_factory.mktemp("calibration") / "sample.csv"
    pd.read_csv(demo_corpus, dtype=str, keep_default_na=False).sample(900, random_state=4).to_csv(path, index=False)
    return path


class Spy:
    """Records what fit_bundle's risk head saw: its labels, its folds, its cross-fitted scores."""

    def __init__(self, monkeypatch):
        self.calls: list[dict] = []
        original = RiskClassifier.fit
        spy = self

        def fit(head, X_text, X_struct, y, cv=None, **kwargs):
            folds = []

            def recording(labels, k):
                for tr, te, X_tr, X_te in cv(labels, k):
                    folds.append((tr, te))
                    yield tr, te, X_tr, X_te
            out = original(head, X_text, X_struct, y, cv=recording, **kwargs)
            spy.calls.append({"y": np.asarray(y).astype(int), "folds": folds, "cross": head.cross_fit_score_.copy()})
            return out
        monkeypatch.setattr(RiskClassifier, "fit", fit)


@pytest.fixture(scope="module")
def fitted(sample_csv):
    mp = pytest.MonkeyPatch()
    spy = Spy(mp)
    ds = load_dataset(sample_csv)
    default = fit_bundle(ds, TrainParams())
    strict = fit_bundle(ds, TrainParams(predict=PredictConfig(high_precision=0.95)))
    mp.undo()
    return ds, default, strict, spy.calls


def test_batches_are_read_from_the_file(sample_csv):
    ds = load_dataset(sample_csv)
    raw = pd.read_csv(sample_csv, dtype=str)
    assert ds.frame["batch"].tolist() == raw["batch"].tolist()
    assert "batch" not in load_dataset(sample_csv, Columns(batch=None)).frame


def test_the_risk_folds_hold_out_whole_batches(fitted):
    ds, _, _, calls = fitted
    batches = ds.frame["batch"].iloc[labelled(ds, "risk")].to_numpy()
    folds = calls[0]["folds"]
    assert len(folds) == 5 and sorted(np.concatenate([te for _, te in folds])) == list(range(len(batches)))
    for tr, te in folds:
        assert not set(batches[tr]) & set(batches[te])


def test_cross_fit_figures_are_recorded(fitted):
    ds, bundle, _, calls = fitted
    y, cross = calls[0]["y"], calls[0]["cross"]
    record = bundle.meta["risk_cross_fit"]
    assert record["folds"] == "whole batches held out" and record["rows"] == len(ds) == len(cross)
    assert record["roc_auc"] == pytest.approx(roc_auc_score(y, cross), abs=1e-4)
    assert 0 <= record["ece"] < 0.2 and record["log_loss"] > 0
    assert set(record["levels"]) == {"高", "中"}
    assert all(set(figures) == LEVEL_KEYS for figures in record["levels"].values())
    assert record["levels"] == level_metrics(y, levels_of(cross, bundle.risk_thresholds))
    assert bundle.meta["expected_alert_rates"] == {k: v["alert_rate"] for k, v in record["levels"].items()}


def test_the_cross_fit_scores_are_held_out_not_in_sample(fitted, sample_csv):
    """The figures behind the thresholds are what new writers would see, not the training fit."""
    ds, bundle, _, _ = fitted
    fields = ds.frame[ds.features]
    served = np.array([p["risk"]["score"] for p in bundle.predict(ds.texts, fields, explain=False)])
    in_sample = roc_auc_score(ds.frame["risk"].astype(int), served)
    assert in_sample > bundle.meta["risk_cross_fit"]["roc_auc"] + 0.01


def test_thresholds_come_from_the_cross_fitted_scores(fitted):
    _, bundle, strict, calls = fitted
    y, cross = calls[0]["y"], calls[0]["cross"]
    # The serving config changes no score (up to liblinear's own jitter between two fits).
    assert np.allclose(cross, calls[1]["cross"], atol=1e-3)
    assert bundle.risk_thresholds == choose_thresholds(cross, y, PredictConfig())
    high = bundle.risk_thresholds["高"]
    assert y[cross >= high].mean() >= 0.85
    below = cross[cross < high].max()  # one score lower and the alerts fall short of 85% precision
    assert y[cross >= below].mean() < 0.85
    assert bundle.meta["risk_cross_fit"]["levels"]["高"]["precision"] >= 0.85
    assert bundle.meta["risk_cross_fit"]["levels"]["中"]["recall"] >= 0.85
    # Asking for 95% precision raises 高 and is met on the same held-out scores.
    cross2 = calls[1]["cross"]
    assert strict.risk_thresholds == choose_thresholds(cross2, y, PredictConfig(high_precision=0.95))
    assert strict.risk_thresholds["高"] > high and y[cross2 >= strict.risk_thresholds["高"]].mean() >= 0.95
    assert strict.risk_thresholds["中"] == pytest.approx(bundle.risk_thresholds["中"], abs=1e-3)


# --- the batch column --------------------------------------------------------------------------------
def test_rows_without_a_batch_are_one_batch_of_their_own(sample_csv, tmp_path):
    """Feedback rows appended to a corpus carry no batch: they are held out together, never mixed into
    a writer's batch, and never an error."""
    frame = pd.read_csv(sample_csv, dtype=str, keep_default_na=False)
    frame.loc[[3, 10, 11], "batch"] = ["  ", "", " "]
    path = tmp_path / "gap.csv"
    frame.to_csv(path, index=False)
    batches = load_dataset(path).frame["batch"]
    assert batches[3] == batches[10] == batches[11] == UNBATCHED
    assert (batches == UNBATCHED).sum() == 3 and UNBATCHED not in set(frame["batch"])


def test_a_named_batch_column_must_exist(sample_csv, tmp_path, capsys):
    code, _, err = run(capsys, "train", "--data", sample_csv, "--batch-col", "writer", "--registry", tmp_path / "r")
    assert code == 2 and "no column 'writer'" in err and err.count("\n") == 1
    with pytest.raises(DataError, match="no column 'writer'"):
        load_dataset(sample_csv, Columns(batch="writer", explicit=frozenset({"batch"})))
    # Not named: a file without the default column simply has no batches.
    frame = pd.read_csv(sample_csv, dtype=str, keep_default_na=False).drop(columns="batch").head(50)
    path = tmp_path / "nobatch.csv"
    frame.assign(writer=[f" w{i % 3} " for i in range(50)]).to_csv(path, index=False)
    assert "batch" not in load_dataset(path).frame
    named = load_dataset(path, Columns(batch="writer", explicit=frozenset({"batch"})))
    assert named.frame["batch"].tolist()[:4] == ["w0", "w1", "w2", "w0"]


def test_without_batches_the_card_says_stratified(sample_csv, tmp_path, capsys):
    frame = pd.read_csv(sample_csv, dtype=str, keep_default_na=False).head(400)
    frame.loc[0, "batch"] = ""  # ignored: --batch-col '' turns batches off
    path = tmp_path / "small.csv"
    frame.to_csv(path, index=False)
    reg = tmp_path / "reg"
    code, out, err = run(capsys, "train", "--data", path, "--batch-col", "", "--registry", reg, "--quiet")
    assert code == 0, err
    code, out, _ = run(capsys, "models", "show", json.loads(out)["version"], "--registry", reg)
    card = json.loads(out)
    assert card["metrics"]["cross_fit"]["folds"] == "stratified"
    assert card["thresholds_from"] == "cross-fitted training rows (stratified)"


# --- level metrics and evaluate ----------------------------------------------------------------------
def test_level_metrics_count_the_rows_at_or_above_each_level():
    y = [1, 1, 0, 0, 1, 0]
    m = level_metrics(y, ["高", "中", "高", "低", "低", "中"])
    assert m["高"] == {"alerts": 2, "alert_rate": 0.3333, "recall": 0.3333, "precision": 0.5}
    assert m["中"] == {"alerts": 4, "alert_rate": 0.6667, "recall": 0.6667, "precision": 0.5}  # 中 counts 高 too
    none = level_metrics([0, 0, 1], ["低", "低", "低"])
    assert none["高"] == {"alerts": 0, "alert_rate": 0.0, "recall": 0.0, "precision": None}
    calm = level_metrics([0, 0], ["高", "低"])
    assert calm["高"]["recall"] is None and calm["高"]["precision"] == 0.0


def test_levels_of_applies_the_cut_offs_as_the_bundle_does(demo_bundle):
    thresholds = {"高": 0.7, "中": 0.4}
    assert levels_of([0.1, 0.4, 0.69, 0.7, 0.99], thresholds).tolist() == ["低", "中", "中", "高", "高"]
    assert levels_of([0.9], {}).tolist() == ["低"]
    scores = np.linspace(0, 1, 201)
    assert levels_of(scores, demo_bundle.risk_thresholds).tolist() == [demo_bundle.risk_level(s) for s in scores]


def test_evaluate_reports_levels_as_served(demo_bundle, small_demo):
    ds = load_dataset(small_demo)
    metrics = evaluate(demo_bundle, ds)
    levels = metrics["risk"]["levels"]
    predicted = [p["risk"]["level"] for p in demo_bundle.predict(ds.texts, ds.frame[ds.features], explain=False)]
    y = ds.frame["risk"].astype(int).to_numpy()
    assert levels["高"]["alerts"] == predicted.count("高")
    assert levels["中"]["alerts"] == predicted.count("高") + predicted.count("中")
    hits = sum(1 for lv, t in zip(predicted, y, strict=True) if lv == "高" and t == 1)
    assert levels["高"]["recall"] == round(hits / y.sum(), 4)
    assert levels["高"]["precision"] == round(hits / predicted.count("高"), 4)


# --- the model card after training -------------------------------------------------------------------
def test_the_card_shows_the_cross_fit_and_where_thresholds_came_from(trained_registry):
    registry, result = trained_registry
    card = registry.card(result.version)
    bundle = registry.load(result.version)
    cross = card["metrics"]["cross_fit"]
    assert cross == bundle.meta["risk_cross_fit"]
    assert cross["folds"] == "whole batches held out" and cross["rows"] == card["data"]["train_rows"]
    assert {"roc_auc", "ece", "log_loss"} <= set(cross) and set(cross["levels"]) == {"高", "中"}
    assert card["thresholds_from"] == "cross-fitted training rows (whole batches held out)"
    assert card["risk_thresholds"] == bundle.risk_thresholds
    assert card["expected_alert_rates"] == {k: v["alert_rate"] for k, v in cross["levels"].items()}
    assert cross["levels"]["高"]["precision"] >= 0.85
    assert set(card["metrics"]["validation"]["risk"]["levels"]) == {"高", "中"}
