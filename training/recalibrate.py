"""Refit the risk probabilities and levels on the bank's own outcomes, without retraining the text model.

The bank's escalation outcomes (a labelled file, or the service's recorded outcomes) are split
stratified into a fitting part and a checking part. On the fitting part a two-parameter map of the
served probability (Platt scaling on its logit) is fitted and the 高/中 thresholds are chosen again; on
the checking part, which the map never saw, the model before and after are measured side by side.
The result is a new registry version, a copy of the parent with the map, the thresholds and a card
saying where they came from; `promote` judges it on the checking rows by risk log-loss (ranking is
unchanged by a monotone map, so ROC-AUC cannot tell them apart).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from models.hashing import sha256_file
from models.registry import Registry
from training.common import choose_thresholds, score_histogram
from training.data import DataError, Dataset, labelled
from training.evaluate import level_metrics, levels_of, predict_dataset, risk_metrics
from training.pipeline import storable

MIN_OUTCOMES = 100  # the 30% check part must reach the promotion gate's 30 rows
MIN_EACH_OUTCOME = 10


@dataclass
class RecalibrationResult:
    version: str
    parent: str
    card: dict[str, Any]
    promotion: dict[str, Any] | None = None


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_platt(score: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """a, b of p → sigmoid(a · logit(p) + b) minimising log-loss (barely regularised: two parameters)."""
    lr = LogisticRegression(C=1e4, max_iter=1000).fit(_logit(score)[:, None], y)
    return {"a": round(float(lr.coef_[0, 0]), 6), "b": round(float(lr.intercept_[0]), 6)}


def _figures(y: np.ndarray, score: np.ndarray, thresholds: dict[str, float]) -> dict[str, Any]:
    return {**risk_metrics(y, score), "levels": level_metrics(y, levels_of(score, thresholds))}


def recalibrate(registry: Registry, ref: str, ds: Dataset, *, check_frac: float = 0.3,
                seed: int = 0) -> RecalibrationResult:
    """A new version of `ref` whose risk probabilities and levels are refitted on `ds`'s outcomes."""
    parent_dir = registry.resolve(ref)
    parent = parent_dir.name
    bundle = registry.load(str(parent_dir))
    if "risk" not in bundle.heads:
        raise DataError(f"model {parent} has no risk head to recalibrate")
    if "risk" not in ds.heads:
        raise DataError(f"{ds.source}: no escalation outcome column to recalibrate on (--risk-col)")
    if not 0 < check_frac < 1:
        raise DataError("--check-frac must be between 0 and 1")
    idx = labelled(ds, "risk")
    y_all = ds.frame["risk"].iloc[idx].astype(int).to_numpy()
    positives = int(y_all.sum())
    if len(idx) < MIN_OUTCOMES or min(positives, len(idx) - positives) < MIN_EACH_OUTCOME:
        raise DataError(f"{ds.source}: {len(idx)} outcomes ({positives} escalated); recalibration needs at least "
                        f"{MIN_OUTCOMES}, with {MIN_EACH_OUTCOME} or more of each outcome")
    # Both parts need each outcome: the fit for the calibrator, the check for the gate's comparison.
    minority = min(positives, len(idx) - positives)
    n_check = int(np.ceil(check_frac * len(idx)))
    if min(n_check, len(idx) - n_check) < 2 or min(minority * check_frac, minority * (1 - check_frac)) < 2:
        raise DataError(f"--check-frac {check_frac} leaves too few of each outcome to fit on or to check "
                        f"({len(idx)} outcomes, {positives} escalated); use a fraction nearer 0.3")
    outcomes = ds.subset(idx)
    fit_rows, check_rows = train_test_split(np.arange(len(outcomes)), test_size=check_frac, random_state=seed,
                                            stratify=y_all)
    served = np.array([p["risk"]["score"] for p in predict_dataset(bundle, outcomes)])
    y_fit, y_check = y_all[fit_rows], y_all[check_rows]

    platt = fit_platt(served[fit_rows], y_fit)
    previous = bundle.risk_calibration or {"a": 1.0, "b": 0.0}
    # The map applies to the probability as served, which may already carry an earlier map: compose them.
    combined = {"a": round(platt["a"] * previous["a"], 6), "b": round(platt["a"] * previous["b"] + platt["b"], 6)}
    after = 1 / (1 + np.exp(-(platt["a"] * _logit(served) + platt["b"])))
    thresholds = choose_thresholds(after[fit_rows], y_fit, bundle.config)
    before_thresholds = dict(bundle.risk_thresholds)
    record = {
        "from": parent,
        "data": {"file": ds.source, "sha256": sha256_file(ds.source) if ds.source and _is_file(ds.source) else None,
                 "outcomes": int(len(idx)), "escalated": positives, "fit_rows": int(len(fit_rows)),
                 "check_rows": int(len(check_rows)), "split": {"kind": "stratified", "check_frac": check_frac,
                                                               "seed": seed}},
        "calibrator": {"kind": "platt on the served probability's logit", **platt},
        "thresholds": {"before": before_thresholds, "after": thresholds},
        "check": {"before": _figures(y_check, served[check_rows], before_thresholds),
                  "after": _figures(y_check, after[check_rows], thresholds)},
    }
    bundle.risk_calibration = combined
    bundle.risk_thresholds = thresholds
    bundle.meta["risk_reference_histogram"] = score_histogram(after)
    bundle.meta["thresholds_from"] = f"recalibration on {ds.source} ({len(fit_rows)} outcomes)"
    bundle.meta["recalibration"] = record
    bundle.meta["expected_alert_rates"] = {level: f["alert_rate"] for level, f in
                                           level_metrics(y_all, levels_of(after, thresholds)).items()}
    card = dict(registry.card(parent))
    for key in ("version", "created_at", "format_version", "library_versions", "bundle_sha256", "bundle_bytes",
                "weight_files", "python_executable"):
        card.pop(key, None)
    card.update({"risk_thresholds": thresholds, "thresholds_from": bundle.meta["thresholds_from"],
                 "risk_reference_histogram": bundle.meta["risk_reference_histogram"], "recalibration": record,
                 "expected_alert_rates": bundle.meta["expected_alert_rates"]})
    check = outcomes.subset(check_rows)
    version = registry.save(bundle, card, validation=storable(check.frame),
                            trained_on_prints=registry.trained_on(parent) or ())
    return RecalibrationResult(version, parent, registry.card(version))


def _is_file(path: str) -> bool:
    return Path(path).is_file()
