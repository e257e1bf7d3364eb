"""The model bundle: text features, the heads the training data had labels for, risk thresholds.

`ModelBundle.predict` is the one way every caller (CLI, service, benchmarks) scores text.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.special import expit

from models.explain import phrases_from_char_scores, word_units_fn
from models.features import BlockTfidf, NgramCounter, StructuredEncoder
from models.heads import HybridTextClassifier, LinearTextClassifier, MultiLabelTextClassifier, RiskClassifier
from models.levels import RISK_LEVELS, RiskLevel
from models.text import clean

FORMAT_VERSION = 6
PARALLEL_MIN_TEXTS = 2000  # below this, starting worker processes costs more than it saves
TEXT_HEADS = ("category", "cause")


@dataclass
class PredictConfig:
    """Serving choices stored with the bundle; the service may override them per deployment."""

    top_k: int = 3
    review_threshold: float = 0.5  # below this top-1 probability a category/cause needs a human
    n_phrases: int = 5
    # 高: the lowest score at which at least this share of alerts became disputes on writers the model
    # never saw (a letter a department must act on should usually be right); None: use high_recall.
    high_precision: float | None = 0.85
    high_recall: float = 0.5  # 高 when high_precision is None: the score above which half of the disputes lie
    medium_recall: float = 0.85  # 中: the score above which 85% of the disputes lie


@dataclass
class ModelBundle:
    counter: NgramCounter | None  # None in a finetune bundle: the network reads the text itself
    tfidf: BlockTfidf | None
    heads: dict[str, Any]
    structured: StructuredEncoder | None = None
    risk_thresholds: dict[str, float] = field(default_factory=dict)
    config: PredictConfig = field(default_factory=PredictConfig)
    meta: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # The hybrid backend's frozen sentence encoder; pickled by reference (path + sha256), not weights.
    encoder: Any = None
    # The finetune backend's network (models.finetune.FineTunedModel); its weights are a file beside
    # the bundle (`weight_files`), written and verified by the registry.
    finetuned: Any = None
    # A map of the risk head's probability refitted on the bank's own outcomes (`xiaobao recalibrate`):
    # p → sigmoid(a · logit(p) + b). None: the head's own calibration stands.
    risk_calibration: dict[str, float] | None = None

    # --- features ------------------------------------------------------------------------------
    def features(self, texts: Sequence[str]) -> sparse.csr_matrix:
        return self.tfidf.transform(self.counter.transform(texts))

    def structured_features(self, fields: pd.DataFrame | Sequence[Mapping] | None, n: int) -> np.ndarray:
        if self.structured is None:
            return np.zeros((n, 0), dtype=np.float32)
        frame = fields if isinstance(fields, pd.DataFrame) else pd.DataFrame(list(fields or [{}] * n))
        if len(frame) != n:
            raise ValueError(f"{len(frame)} rows of fields for {n} texts")
        return self.structured.transform(frame.reset_index(drop=True))

    @property
    def head_names(self) -> list[str]:
        return list(self.heads)

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "unregistered"))

    # --- files stored beside the bundle (fine-tuned weights) -------------------------------------
    def weight_files(self) -> list[str]:
        return self.finetuned.files() if self.finetuned is not None else []

    def save_weight_files(self, folder) -> dict[str, str]:
        """Write them into a version folder; returns {file name: sha256}."""
        return self.finetuned.save_weights(folder) if self.finetuned is not None else {}

    def load_weight_files(self, folder) -> None:
        if self.finetuned is not None:
            self.finetuned.load_weights(folder)

    # --- prediction ----------------------------------------------------------------------------
    def calibrated_risk(self, scores: np.ndarray) -> np.ndarray:
        """The risk head's probabilities through the recalibration, where the bundle has one."""
        cal = self.risk_calibration
        if not cal:
            return scores
        p = np.clip(np.asarray(scores, dtype=np.float64), 1e-6, 1 - 1e-6)
        return expit(cal["a"] * np.log(p / (1 - p)) + cal["b"])

    def risk_level(self, score: float) -> RiskLevel:
        if score >= self.risk_thresholds.get(RiskLevel.HIGH, math.inf):
            return RiskLevel.HIGH
        if score >= self.risk_thresholds.get(RiskLevel.MEDIUM, math.inf):
            return RiskLevel.MEDIUM
        return RiskLevel.LOW

    def predict(self, texts: Sequence[str], fields: pd.DataFrame | Sequence[Mapping] | None = None,
                explain: bool = True, already_clean: bool = False, n_jobs: int = 1) -> list[dict[str, Any]]:
        """Score texts; `fields` holds the structured values (channel, repeat_count, ...) per text.

        `n_jobs` > 1 (or -1: every core) scores large batches in chunks in worker processes; the
        worker pool persists between calls, so the first call also pays for starting it (~1 s).
        """
        texts = list(texts)
        if not texts:
            return []
        workers = (os.cpu_count() or 1) if n_jobs == -1 else max(1, n_jobs)
        # An encoder already uses every core through torch; worker processes would each load it.
        if workers > 1 and len(texts) >= PARALLEL_MIN_TEXTS and self.encoder is None and self.finetuned is None:
            from joblib import Parallel, delayed

            frame = None if fields is None else (
                fields.reset_index(drop=True) if isinstance(fields, pd.DataFrame) else pd.DataFrame(list(fields)))
            size = -(-len(texts) // workers)
            parts = Parallel(n_jobs=workers)(
                delayed(self.predict)(texts[i:i + size], None if frame is None else frame.iloc[i:i + size],
                                      explain, already_clean)
                for i in range(0, len(texts), size))
            return [p for part in parts for p in part]
        texts = texts if already_clean else [clean(t) for t in texts]
        if self.finetuned is not None:
            return self.finetuned.predict(self, texts, fields, explain)
        E = self.encoder.encode(texts) if self.encoder is not None else None
        return self.predict_features(self.features(texts), fields, texts if explain else None, E)

    def predict_features(self, X: sparse.csr_matrix, fields: pd.DataFrame | Sequence[Mapping] | None = None,
                         texts: Sequence[str] | None = None, E: np.ndarray | None = None) -> list[dict[str, Any]]:
        """Predictions from TF-IDF rows (and encoder embeddings `E` for a hybrid bundle); with the
        cleaned `texts` given, each head also gets its phrases."""
        if self.finetuned is not None:
            raise ValueError("a finetune bundle scores texts, not TF-IDF rows: use predict()")
        n = X.shape[0]
        if self.encoder is not None and E is None:
            raise ValueError("a hybrid bundle needs the texts' embeddings")
        out: list[dict[str, Any]] = [{"model_version": self.version} for _ in range(n)]
        reasons: list[list[str]] = [[] for _ in range(n)]
        explained: dict[str, list] = {}
        for name in TEXT_HEADS:
            head = self.heads.get(name)
            if head is None:
                continue
            proba = head.predict_proba(X, E) if isinstance(head, HybridTextClassifier) else head.predict_proba(X)
            k = min(self.config.top_k, proba.shape[1])
            order = np.argsort(-proba, axis=1)[:, :k]
            multilabel = isinstance(head, MultiLabelTextClassifier)
            for i in range(n):
                top = [{"label": str(head.classes_[j]), "probability": round(float(proba[i, j]), 4)}
                       for j in order[i]]
                result = {"label": top[0]["label"], "probability": top[0]["probability"], "top_k": top}
                if multilabel:
                    result["labels"] = [str(head.classes_[j]) for j in np.flatnonzero(proba[i] >= head.threshold)] \
                        or [top[0]["label"]]
                if top[0]["probability"] < self.config.review_threshold:
                    reasons[i].append(f"{name}_low_confidence")
                out[i][name] = result
            explained[name] = [order[i, 0] for i in range(n)]
        risk = self.heads.get("risk")
        if risk is not None:
            S = self.structured_features(fields, n)
            scores = self.calibrated_risk(risk.risk_score(X, S, E))
            for i in range(n):
                s = float(scores[i])
                out[i]["risk"] = {"score": round(s, 4), "level": self.risk_level(s)}
        for i in range(n):
            out[i]["needs_review"] = bool(reasons[i])
            out[i]["review_reasons"] = reasons[i]
        if texts is not None:
            self._explain(texts, X, out, explained)
        return out

    def _explain(self, texts, X, out, explained) -> None:
        units = word_units_fn(self.counter._seg().engine)
        for i, text in enumerate(texts):
            row = X.getrow(i)
            words = units(text)
            for name, head in self.heads.items():
                idx, contrib = head.contributions(row) if name == "risk" else \
                    head.contributions(row, explained[name][i])
                chars = self.counter.attribute(text, idx, contrib)
                out[i][name]["phrases"] = phrases_from_char_scores(text, words, chars, self.config.n_phrases)


def new_bundle(*, counter: NgramCounter | None = None, config: PredictConfig | None = None) -> ModelBundle:
    return ModelBundle(counter=counter or NgramCounter(), tfidf=BlockTfidf(), heads={},
                       config=config or PredictConfig())


__all__ = ["FORMAT_VERSION", "ModelBundle", "PredictConfig", "RISK_LEVELS", "RiskLevel", "TEXT_HEADS",
           "HybridTextClassifier", "LinearTextClassifier", "MultiLabelTextClassifier", "RiskClassifier", "new_bundle"]
