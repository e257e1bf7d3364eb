"""Train-and-register, cross-validate, and promote: the steps behind the CLI commands."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from models.bundle import ModelBundle
from models.features import NgramCounter
from models.hashing import sha256_file, text_fingerprint
from models.registry import VALIDATION_FILE, ModelLoadError, Registry
from models.settings import in_scope
from models.text import Segmenter, clean
from training.base import PromotionRefused
from training.common import Progress, TrainParams
from training.data import DataError, Dataset
from training.evaluate import metrics_from_predictions, predict_dataset, primary_score
from training.fit import _quiet, count_terms, encode, fit_bundle, load_encoder


def _strata(ds: Dataset) -> np.ndarray | None:
    """Labels to stratify splits on: the first single-label head whose classes all have ≥ 2 rows."""
    for head in ("category", "cause", "risk"):
        if head not in ds.heads or (head == "category" and ds.multilabel):
            continue
        y = ds.frame[head].astype(str).to_numpy()
        if ds.frame[head].notna().all() and pd.Series(y).value_counts().min() >= 2:
            return y
    return None


def time_split(ds: Dataset, test_from: str) -> tuple[np.ndarray, np.ndarray]:
    if "time" not in ds.frame:
        raise DataError(f"{ds.source}: a time split needs --time-col")
    try:
        cut = pd.Timestamp(test_from)
    except ValueError:
        raise DataError(f"--test-from {test_from!r} is not a date") from None
    t = pd.to_datetime(ds.frame["time"])
    if t.dt.tz is not None and cut.tz is None:
        cut = cut.tz_localize(t.dt.tz)
    test = (t >= cut).to_numpy()
    if test.all() or not test.any():
        raise DataError(f"{ds.source}: --test-from {test_from} leaves no rows on one side of the split")
    return np.flatnonzero(~test), np.flatnonzero(test)


def holdout_split(ds: Dataset, valid_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(len(ds))
    if not 0 < valid_frac < 1:
        raise DataError("--valid-frac must be between 0 and 1")
    return train_test_split(idx, test_size=valid_frac, random_state=seed, stratify=_strata(ds))



def label_sets(ds: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for head in ds.heads:
        col = ds.frame[head].dropna()
        if head == "risk":
            out[head] = {"positive_rate": round(float(col.mean()), 4), "rows": int(len(col))}
        elif head == "category" and ds.multilabel:
            out[head] = pd.Series([lab for ls in col for lab in ls]).value_counts().to_dict()
        else:
            out[head] = col.value_counts().to_dict()
    return out


def storable(frame: pd.DataFrame) -> pd.DataFrame:
    """The validation frame as parquet can hold it (structured columns as text)."""
    frame = frame.copy()
    for col in frame.columns:
        if col not in ("row", "text", "category", "cause", "risk", "time", "batch"):
            frame[col] = frame[col].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v))
                                        else str(v))
    return frame


TEXT_FEATURES = {
    "linear": "word 1-2-grams + char n-grams, hashed TF-IDF",
    "hybrid": "word 1-2-grams + char n-grams, hashed TF-IDF; frozen encoder embeddings (stacked heads)",
    "finetune": "fine-tuned encoder (mean pooling), one head per task; risk head reads the structured fields too",
}


@dataclass
class TrainResult:
    version: str
    metrics: dict[str, Any]
    seconds: float
    promotion: dict[str, Any] | None = None


def train(ds: Dataset, params: TrainParams, registry: Registry, *, valid_frac: float = 0.2, seed: int = 0,
          test_from: str | None = None, progress: Progress = _quiet) -> TrainResult:
    """Fit on a training split, measure on the held-out split, register the version. An encoder it
    builds uses the registry's model settings (its default checkpoint and embedding cache)."""
    with in_scope(registry.settings):
        return _train(ds, params, registry, valid_frac=valid_frac, seed=seed, test_from=test_from, progress=progress)


def _train(ds: Dataset, params: TrainParams, registry: Registry, *, valid_frac: float, seed: int,
           test_from: str | None, progress: Progress) -> TrainResult:
    started = time.perf_counter()
    ds.frame["text"] = [clean(t) for t in ds.texts]  # masked before anything is stored
    if test_from:
        tr, va = time_split(ds, test_from)
        split = {"kind": "time", "test_from": test_from}
    else:
        tr, va = holdout_split(ds, valid_frac, seed)
        split = {"kind": "stratified holdout", "valid_frac": valid_frac, "seed": seed}
    train_ds, valid_ds = ds.subset(tr), ds.subset(va)
    bundle = fit_bundle(train_ds, params, progress, clean_texts=train_ds.texts)
    predictions = predict_dataset(bundle, valid_ds)
    metrics = metrics_from_predictions(valid_ds, predictions)
    if "risk_cross_fit" in bundle.meta:
        bundle.meta["thresholds_from"] = f"cross-fitted training rows ({bundle.meta['risk_cross_fit']['folds']})"
    bundle.meta["needs_review_share"] = round(float(np.mean([p["needs_review"] for p in predictions])), 4)
    seconds = time.perf_counter() - started
    card = {
        "data": {"file": ds.source, "sha256": sha256_file(ds.source), "rows": len(ds),
                 "train_rows": len(train_ds), "validation_rows": len(valid_ds),
                 "skipped": {reason: len(rows) for reason, rows in ds.skipped.items()}},
        "split": split,
        "heads": list(bundle.heads),
        "label_sets": label_sets(ds),
        "features": {"text": TEXT_FEATURES.get(params.backend, params.backend), "structured": ds.features},
        "metrics": {"validation": metrics, **({"cross_fit": bundle.meta["risk_cross_fit"]}
                                              if "risk_cross_fit" in bundle.meta else {})},
        "risk_thresholds": bundle.risk_thresholds,
        "thresholds_from": bundle.meta.get("thresholds_from"),
        "expected_alert_rates": bundle.meta.get("expected_alert_rates"),
        "needs_review_share": bundle.meta["needs_review_share"],
        "risk_reference_histogram": bundle.meta.get("risk_reference_histogram"),
        "params": params.as_dict(),
        "training_seconds": round(seconds, 2),
    }
    for key in ("encoder", "finetune"):  # the base encoder referenced; the fine-tuning run's record
        if key in bundle.meta:
            card[key] = bundle.meta[key]
    version = registry.save(bundle, card, validation=storable(valid_ds.frame), trained_on=train_ds.texts)
    return TrainResult(version, metrics, seconds)


def cross_validate(ds: Dataset, params: TrainParams, *, folds: int = 5, test_from: str | None = None,
                   progress: Progress = _quiet) -> dict[str, Any]:
    """Pooled out-of-fold metrics (stratified, shuffled, seed 0), or one train-before/test-from split."""
    texts = [clean(t) for t in ds.texts]
    counter = NgramCounter(Segmenter(params.segmenter), params.word_ngrams, params.char_ngrams, params.n_features)
    finetune = params.backend == "finetune"  # reads the texts itself: no term counts, no embeddings
    words, chars = count_terms(counter, texts, progress) if not finetune else (None, None)
    E = encode(load_encoder(params.encoder), texts, progress) if params.backend == "hybrid" else None
    if test_from:
        splits = [time_split(ds, test_from)]
        protocol = {"kind": "time", "test_from": test_from}
    else:
        y = _strata(ds)
        if y is None:
            y = np.zeros(len(ds))
        splits = list(StratifiedKFold(folds, shuffle=True, random_state=0).split(np.zeros(len(ds)), y))
        protocol = {"kind": "stratified k-fold", "folds": folds, "shuffle": True, "random_state": 0,
                    "aggregation": "pooled out-of-fold predictions"}
    predictions: list[dict[str, Any] | None] = [None] * len(ds)
    fold_scores = []
    for k, (tr, te) in enumerate(splits):
        progress("folds", k, len(splits))
        train_ds = ds.subset(tr)
        fields = ds.frame.iloc[te][ds.features] if ds.features else None
        if finetune:
            bundle = fit_bundle(train_ds, params, progress, clean_texts=[texts[i] for i in tr])
            fold_pred = bundle.predict([texts[i] for i in te], fields, explain=False, already_clean=True)
        else:
            bundle = fit_bundle(train_ds, params, counts=(words[tr], chars[tr]),
                                embeddings=None if E is None else E[tr])
            fold_pred = bundle.predict_features(bundle.tfidf.transform((words[te], chars[te])), fields,
                                                E=None if E is None else E[te])
        fold_scores.append(primary_score(metrics_from_predictions(ds.subset(te), fold_pred)))
        for i, p in zip(te, fold_pred, strict=True):
            predictions[i] = p
        progress("folds", k + 1, len(splits))
    tested = np.array([i for i, p in enumerate(predictions) if p is not None])
    metrics = metrics_from_predictions(ds.subset(tested), [predictions[i] for i in tested])
    metrics["protocol"] = protocol
    for head in ("category", "cause", "risk"):
        if head in metrics and len(fold_scores) > 1:
            per_fold = [s[head] for s in fold_scores if head in s]
            metrics[head]["per_fold"] = per_fold
            metrics[head]["fold_mean"] = round(float(np.mean(per_fold)), 4)
    return metrics


MIN_COMPARISON_ROWS = 30


def promote(registry: Registry, version: str, *, data: Dataset | None = None, force: bool = False) -> dict[str, Any]:
    """Make `version` the champion unless it scores worse than the champion on the same data: `data`, or
    else the challenger's validation rows that the champion did not train on either."""
    challenger_dir = registry.resolve(version)
    version = challenger_dir.name
    champion = registry.current()
    result: dict[str, Any] = {"version": version, "previous": champion}
    if champion is None or champion == version:
        registry.set_current(version)
        return {**result, "promoted": True, "reason": "no champion yet" if champion is None else "already current"}
    if data is None:
        path = challenger_dir / VALIDATION_FILE
        if not path.is_file():
            raise DataError(f"{version}: no stored validation split; pass --data FILE to compare on")
        frame = pd.read_parquet(path)
        heads = [h for h in ("category", "cause", "risk") if h in frame]
        features = [c for c in frame.columns if c not in ("row", "text", "time", "batch", *heads)]
        multilabel = "category" in frame and len(frame) and isinstance(frame["category"].dropna().iloc[0],
                                                                         (list, np.ndarray))
        if multilabel:
            frame["category"] = frame["category"].map(lambda v: None if v is None else list(v))
        data = Dataset(frame, f"{version}/{VALIDATION_FILE}", heads, features, {}, bool(multilabel))
        seen = registry.trained_on(champion)
        if seen is not None:  # rows the champion trained on would favour it: compare on the others
            fresh = np.array([text_fingerprint(t) not in seen for t in frame["text"]], dtype=bool)
            if fresh.sum() < MIN_COMPARISON_ROWS:
                raise DataError(
                    f"only {int(fresh.sum())} of {version}'s {len(frame)} validation rows were not in champion "
                    f"{champion}'s training data, too few to compare them; pass --data FILE with rows "
                    "neither trained on")
            if not fresh.all():
                result["left_out"] = {"rows": int((~fresh).sum()), "why": "in the champion's training data"}
                data = data.subset(np.flatnonzero(fresh))
                data.source = f"{version}/{VALIDATION_FILE} ({len(data)} rows the champion did not train on)"
    challenger: ModelBundle = registry.load(version)
    challenger_metrics = metrics_from_predictions(data, predict_dataset(challenger, data))
    try:
        champion_bundle: ModelBundle = registry.load(champion)
    except ModelLoadError as exc:  # a champion that cannot load cannot serve: nothing to defend
        registry.set_current(version)
        return {**result, "promoted": True, "reason": f"champion unusable: {exc}"}
    champion_metrics = metrics_from_predictions(data, predict_dataset(champion_bundle, data))
    if "recalibration" in registry.card(version):
        return _promote_recalibrated(registry, result, data, challenger_metrics, champion_metrics, force)
    scores = {version: primary_score(challenger_metrics), champion: primary_score(champion_metrics)}
    common = sorted(set(scores[version]) & set(scores[champion]))
    if not common:
        raise DataError(f"{data.source}: no head that both models have is labelled in this data")
    new = float(np.mean([scores[version][h] for h in common]))
    old = float(np.mean([scores[champion][h] for h in common]))
    result.update({"evaluated_on": data.source, "heads": common, "challenger": scores[version],
                   "champion": scores[champion], "challenger_mean": round(new, 4), "champion_mean": round(old, 4)})
    if new < old and not force:
        raise PromotionRefused(
            f"{version} scores worse than champion {champion} on {data.source} "
            f"(mean {new:.4f} < {old:.4f} over {', '.join(common)}); use --force to promote anyway")
    registry.set_current(version)
    return {**result, "promoted": True, "forced": bool(new < old)}


def _promote_recalibrated(registry: Registry, result: dict[str, Any], data: Dataset, challenger: dict[str, Any],
                          champion: dict[str, Any], force: bool) -> dict[str, Any]:
    """A recalibrated version changes only the risk probabilities and levels: it is judged by risk
    log-loss on the same rows (a monotone map leaves ROC-AUC as it was)."""
    version, previous = result["version"], result["previous"]
    if "log_loss" not in challenger.get("risk", {}) or "log_loss" not in champion.get("risk", {}):
        raise DataError(f"{data.source}: needs escalation outcomes of both kinds to compare risk calibration")
    keys = ("log_loss", "brier", "ece", "roc_auc", "levels")
    new, old = challenger["risk"]["log_loss"], champion["risk"]["log_loss"]
    result.update({"evaluated_on": data.source, "heads": ["risk"], "criterion": "risk log-loss (lower is better)",
                   "challenger": {k: challenger["risk"][k] for k in keys},
                   "champion": {k: champion["risk"][k] for k in keys}})
    if new > old and not force:
        raise PromotionRefused(
            f"{version} is calibrated worse than champion {previous} on {data.source} "
            f"(risk log-loss {new:.4f} > {old:.4f}); use --force to promote anyway")
    registry.set_current(version)
    return {**result, "promoted": True, "forced": bool(new > old)}
