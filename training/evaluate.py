"""Metrics for each head, in the JSON shape the CLI prints."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

from models.bundle import ModelBundle
from models.levels import ALERT_LEVELS, RiskLevel
from training.data import Dataset, labelled


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate − predicted probability| over equal-width bins, weighted by bin size."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    err = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            err += mask.mean() * abs(y[mask].mean() - p[mask].mean())
    return float(err)


def classification_metrics(y_true: list[str], y_pred: list[str]) -> dict[str, Any]:
    labels = sorted(set(y_true) | set(y_pred))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = sorted(set(y_true))
    return {
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)), 4),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "per_class": {lab: {"precision": round(float(p[i]), 4), "recall": round(float(r[i]), 4),
                            "f1": round(float(f[i]), 4), "support": int(s[i])}
                      for i, lab in enumerate(labels) if s[i] > 0},
    }


def multilabel_metrics(y_true: list[list[str]], y_pred: list[list[str]]) -> dict[str, Any]:
    labels = sorted({lab for ls in y_true for lab in ls})
    index = {lab: i for i, lab in enumerate(labels)}

    def matrix(rows):
        m = np.zeros((len(rows), len(labels)), dtype=int)
        for i, ls in enumerate(rows):
            for lab in ls:
                if lab in index:
                    m[i, index[lab]] = 1
        return m

    T, P = matrix(y_true), matrix(y_pred)
    p, r, f, s = precision_recall_fscore_support(T, P, zero_division=0)
    return {
        "micro_f1": round(float(f1_score(T, P, average="micro", zero_division=0)), 4),
        "macro_f1": round(float(f1_score(T, P, average="macro", zero_division=0)), 4),
        "subset_accuracy": round(float((T == P).all(axis=1).mean()), 4),
        "per_class": {lab: {"precision": round(float(p[i]), 4), "recall": round(float(r[i]), 4),
                            "f1": round(float(f[i]), 4), "support": int(s[i])} for i, lab in enumerate(labels)},
    }


def risk_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, Any]:
    y = np.asarray(y, dtype=int)
    score = np.asarray(score, dtype=float)
    if len(np.unique(y)) < 2:
        return {"n": int(len(y)), "positive_rate": round(float(y.mean()), 4),
                "note": "only one outcome present; ROC-AUC and PR-AUC undefined"}
    return {
        "roc_auc": round(float(roc_auc_score(y, score)), 4),
        "pr_auc": round(float(average_precision_score(y, score)), 4),
        "ece": round(expected_calibration_error(y, score), 4),
        "brier": round(float(brier_score_loss(y, score)), 4),
        "log_loss": round(float(log_loss(y, np.clip(score, 1e-6, 1 - 1e-6), labels=[0, 1])), 4),
        "positive_rate": round(float(y.mean()), 4),
    }


def level_metrics(y: np.ndarray, levels: list[str] | np.ndarray) -> dict[str, Any]:
    """Per risk level, the rows at or above it: their share (the alert rate), the share of disputes
    they catch (recall) and the share of them that became disputes (precision)."""
    y = np.asarray(y, dtype=int)
    levels = np.asarray(levels)
    out: dict[str, Any] = {}
    for k, level in enumerate(ALERT_LEVELS):
        alert = np.isin(levels, ALERT_LEVELS[: k + 1])
        hits = int((alert & (y == 1)).sum())
        out[level] = {"alerts": int(alert.sum()), "alert_rate": round(float(alert.mean()), 4) if len(y) else None,
                      "recall": round(hits / int(y.sum()), 4) if y.sum() else None,
                      "precision": round(hits / int(alert.sum()), 4) if alert.sum() else None}
    return out


def levels_of(score: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """The level each score falls in (the rule ModelBundle.risk_level applies to one score)."""
    score = np.asarray(score, dtype=float)
    high, medium = (thresholds.get(level, np.inf) for level in (RiskLevel.HIGH, RiskLevel.MEDIUM))
    return np.where(score >= high, RiskLevel.HIGH.value,
                    np.where(score >= medium, RiskLevel.MEDIUM.value, RiskLevel.LOW.value))


def metrics_from_predictions(ds: Dataset, predictions: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics for every head that both the data labels and the predictions carry."""
    out: dict[str, Any] = {"n": len(ds)}
    for head in ("category", "cause"):
        if head not in ds.heads or not predictions or head not in predictions[0]:
            continue
        idx = labelled(ds, head)
        truth = ds.frame[head].iloc[idx].tolist()
        if ds.multilabel and head == "category":
            pred = [predictions[i][head].get("labels", [predictions[i][head]["label"]]) for i in idx]
            out[head] = multilabel_metrics(truth, pred)
        else:
            pred = [predictions[i][head]["label"] for i in idx]
            out[head] = classification_metrics(truth, pred)
    if "risk" in ds.heads and predictions and "risk" in predictions[0]:
        idx = labelled(ds, "risk")
        y = ds.frame["risk"].iloc[idx].to_numpy()
        out["risk"] = risk_metrics(y, np.array([predictions[i]["risk"]["score"] for i in idx]))
        out["risk"]["levels"] = level_metrics(y, [predictions[i]["risk"]["level"] for i in idx])
    return out


def predict_dataset(bundle: ModelBundle, ds: Dataset, explain: bool = False, n_jobs: int = 1) -> list[dict[str, Any]]:
    fields = ds.frame[ds.features] if ds.features else None
    return bundle.predict(ds.texts, fields, explain=explain, n_jobs=n_jobs)


def evaluate(bundle: ModelBundle, ds: Dataset, n_jobs: int = 1) -> dict[str, Any]:
    return metrics_from_predictions(ds, predict_dataset(bundle, ds, n_jobs=n_jobs))


def primary_score(metrics: dict[str, Any]) -> dict[str, float]:
    """The one number per head that promotion compares: macro-F1 for classes, ROC-AUC for risk."""
    scores = {}
    for head in ("category", "cause"):
        if head in metrics and "macro_f1" in metrics[head]:
            scores[head] = metrics[head]["macro_f1"]
    if "risk" in metrics and "roc_auc" in metrics["risk"]:
        scores["risk"] = metrics["risk"]["roc_auc"]
    return scores
