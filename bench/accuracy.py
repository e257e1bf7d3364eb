"""Accuracy on the shared data, each protocol as ../shared/data/README.md fixes it, beside the plain
pipeline measured in the same run. Writes bench/results/accuracy.json. Run: python -m bench.accuracy"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from bench.baseline import plain_pipeline
from bench.common import RESULTS, ROOT, shared, write_result
from models.bundle import PredictConfig
from models.registry import Registry
from training.data import Columns, load_dataset
from training.evaluate import expected_calibration_error, metrics_from_predictions, predict_dataset
from training.fit import TrainParams
from training.pipeline import cross_validate, train


def plain_cv(texts: list[str], y: np.ndarray) -> dict[str, float]:
    pred = np.empty(len(y), dtype=object)
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(texts, y):
        model = plain_pipeline().fit([texts[i] for i in tr], y[tr])
        pred[te] = model.predict([texts[i] for i in te])
    return {"macro_f1": round(float(f1_score(y, pred, average="macro")), 4),
            "accuracy": round(float(accuracy_score(y, pred)), 4)}


def taidi(name: str) -> dict[str, Any] | None:
    path = shared(f"taidi2020c/{name}.csv")
    if path is None:
        return None
    ds = load_dataset(path, Columns(features=()))
    t0 = time.perf_counter()
    ours = cross_validate(ds, TrainParams(), folds=5)
    ours_s = time.perf_counter() - t0
    frame = pd.read_csv(path)
    t0 = time.perf_counter()
    plain = plain_cv(frame["text"].astype(str).tolist(), frame["category"].to_numpy())
    plain_s = time.perf_counter() - t0
    c = ours["category"]
    return {"protocol": "stratified 5-fold, shuffle, random_state=0; pooled out-of-fold predictions",
            "n": ours["n"],
            "ours": {"macro_f1": c["macro_f1"], "accuracy": c["accuracy"], "fold_mean_macro_f1": c["fold_mean"],
                     "per_fold": c["per_fold"], "per_class": c["per_class"], "seconds": round(ours_s, 1)},
            "plain": {**plain, "seconds": round(plain_s, 1)}}


def cfpb() -> dict[str, Any] | None:
    path = shared("cfpb/complaints_2015_2016.csv")
    if path is None:
        return None
    out: dict[str, Any] = {"protocol": "time split: train date_received < 2016-01-01, test 2016"}
    for label, features in (("text_only", ()), ("text_plus_fields", ("product", "issue", "state", "tags"))):
        columns = Columns(category="product", cause=None, risk="disputed", time="date_received",
                          features=features)
        m = cross_validate(load_dataset(path, columns), TrainParams(), test_from="2016-01-01")
        out[label] = {"risk": {k: m["risk"][k] for k in ("roc_auc", "pr_auc", "ece", "brier")},
                      "product_macro_f1": m["category"]["macro_f1"], "n_test": m["n"]}
    frame = pd.read_csv(path)
    train_rows = frame["date_received"] < "2016-01-01"
    vec = TfidfVectorizer(sublinear_tf=True, min_df=2, ngram_range=(1, 2))
    Xtr = vec.fit_transform(frame.loc[train_rows, "text"])
    Xte = vec.transform(frame.loc[~train_rows, "text"])
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(Xtr, frame.loc[train_rows, "disputed"])
    p = lr.predict_proba(Xte)[:, 1]
    y = frame.loc[~train_rows, "disputed"].to_numpy()
    out["plain_text_lr"] = {"roc_auc": round(float(roc_auc_score(y, p)), 4),
                            "pr_auc": round(float(average_precision_score(y, p)), 4),
                            "ece": round(expected_calibration_error(y, p), 4)}
    return out


def car() -> dict[str, Any] | None:
    path = shared("car_12365auto/complaints.csv")
    if path is None:
        return None
    frame = pd.read_csv(path)
    frame = frame[frame["problem_codes"].notna() & (frame["problem_codes"].astype(str).str.strip() != "")]
    # Code letters, comma-separated, from the problem codes (e.g. "H155,M279" → "H,M").
    frame = frame.assign(letters=frame["problem_codes"].astype(str).map(
        lambda s: ",".join(sorted({c.strip()[0] for c in s.split(",") if c.strip()}))))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "car.csv"
        frame[["desc", "letters"]].to_csv(data, index=False)
        columns = Columns(text=("desc",), category="letters", cause=None, risk=None, features=(),
                          multilabel_sep=",")
        m = cross_validate(load_dataset(data, columns), TrainParams(), folds=5)
    c = m["category"]
    return {"protocol": "5-fold CV over rows with codes; labels = code letters; micro/macro-F1 over letters",
            "n": m["n"], "micro_f1": c["micro_f1"], "macro_f1": c["macro_f1"],
            "subset_accuracy": c["subset_accuracy"], "per_class": c["per_class"]}


def _head_figures(m: dict[str, Any]) -> dict[str, Any]:
    risk = m["risk"]
    return {"category_macro_f1": m["category"]["macro_f1"], "cause_macro_f1": m["cause"]["macro_f1"],
            "risk_roc_auc": risk["roc_auc"], "risk_pr_auc": risk["pr_auc"], "risk_ece": risk["ece"],
            "risk_log_loss": risk["log_loss"], "risk_levels": risk["levels"]}


def bank_dev() -> dict[str, Any] | None:
    """The default model (as `make train` makes it) on requests by other writers, beside its validation
    split and its held-out-writer cross-fit; the baseline is the same training with 高 chosen the old
    way (half the validation disputes), so the gain at 高 is measured in the same run."""
    path = shared("bank_dev/bank_requests_dev.csv")
    if path is None:
        return None
    corpus = ROOT / "data/demo/demo_corpus.csv"
    dev = load_dataset(path, for_training=False)
    out: dict[str, Any] = {"protocol": "default model trained on the demo corpus (80/20 split; thresholds and "
                                       "calibration from writer batches held out), evaluated on all 200 rows"}
    for name, params in (("default", TrainParams()),
                         ("baseline", TrainParams(predict=PredictConfig(high_precision=None, high_recall=0.5)))):
        with tempfile.TemporaryDirectory() as tmp:
            registry = Registry(Path(tmp))
            result = train(load_dataset(corpus), params, registry)
            card = registry.card(result.version)
            predictions = predict_dataset(registry.load(result.version), dev)
        m = metrics_from_predictions(dev, predictions)
        out[name] = {"thresholds": card["risk_thresholds"], "demo_validation": _head_figures(result.metrics),
                     "cross_fit": {k: card["metrics"]["cross_fit"][k] for k in ("roc_auc", "ece", "log_loss", "levels")},
                     "bank_dev": _head_figures(m)}
        if name == "default":
            out[name]["bank_dev_interval"] = bootstrap_interval(dev, predictions)
    return out


BOOTSTRAP_FIGURES = {
    "category_macro_f1": lambda m: m["category"]["macro_f1"], "cause_macro_f1": lambda m: m["cause"]["macro_f1"],
    "risk_roc_auc": lambda m: m["risk"]["roc_auc"], "risk_ece": lambda m: m["risk"]["ece"],
    "high_recall": lambda m: m["risk"]["levels"]["高"]["recall"],
    "high_precision": lambda m: m["risk"]["levels"]["高"]["precision"],
}


def bootstrap_interval(ds, predictions: list[dict[str, Any]], resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """95% percentile intervals over rows drawn with replacement: how far 200 rows pin a figure down,
    so a target missed or met by less than the interval's width reads as such."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in BOOTSTRAP_FIGURES}
    for _ in range(resamples):
        idx = rng.integers(0, len(ds), len(ds))
        m = metrics_from_predictions(ds.subset(idx), [predictions[i] for i in idx])
        for key, figure in BOOTSTRAP_FIGURES.items():
            draws[key].append(figure(m))
    return {"resamples": resamples, "level": 0.95,
            **{k: [round(float(np.quantile(v, 0.025)), 4), round(float(np.quantile(v, 0.975)), 4)]
               for k, v in draws.items()}}


def main() -> dict[str, Any]:
    sections = {"taidi_bodies": lambda: taidi("bodies"), "taidi_titles": lambda: taidi("titles"),
                "cfpb": cfpb, "car_12365auto": car, "bank_dev": bank_dev}
    only = [a for a in sys.argv[1:] if a in sections] or list(sections)
    previous = RESULTS / "accuracy.json"
    result: dict[str, Any] = {}
    if len(only) < len(sections) and previous.is_file():  # rerunning some sections keeps the others
        result = {k: v for k, v in json.loads(previous.read_text(encoding="utf-8")).items() if k != "machine"}
    for name in only:
        t0 = time.perf_counter()
        result[name] = sections[name]()
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        write_result("accuracy", result)  # after each section, so a late failure loses nothing
    return result


if __name__ == "__main__":
    main()
