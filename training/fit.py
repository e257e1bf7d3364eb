"""Fitting a bundle from a dataset: features, the heads its labels allow, risk thresholds."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from models.bundle import ModelBundle
from models.features import BlockTfidf, NgramCounter, StructuredEncoder
from models.heads import (
    HybridTextClassifier,
    LinearTextClassifier,
    MultiLabelTextClassifier,
    RiskClassifier,
    batch_folds,
)
from models.text import Segmenter, clean
from training.base import BACKENDS
from training.common import Progress, TrainParams, choose_thresholds, score_histogram, split_feature_kinds
from training.data import Dataset, labelled
from training.evaluate import level_metrics, levels_of, risk_metrics


def _quiet(stage: str, done: int, total: int) -> None:
    pass


def count_terms(counter: NgramCounter, texts: list[str], progress: Progress = _quiet,
                chunk: int = 2000) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Hashed counts for many texts, reporting progress chunk by chunk."""
    words, chars = [], []
    for start in range(0, len(texts), chunk):
        w, c = counter.transform(texts[start:start + chunk])
        words.append(w)
        chars.append(c)
        progress("features", min(start + chunk, len(texts)), len(texts))
    return sparse.vstack(words, format="csr"), sparse.vstack(chars, format="csr")


def refit_idf_splits(counts: tuple[sparse.csr_matrix, sparse.csr_matrix], rows: np.ndarray, min_df: int = 1,
                     batches: np.ndarray | None = None):
    """Out-of-fold splits over `rows` whose IDF is fitted on the training part of each fold only; with
    `batches` (one per row of `rows`), folds hold out whole batches."""
    def splits(y: np.ndarray, n_splits: int):
        for tr, te in batch_folds(y, n_splits, batches):
            tfidf = BlockTfidf(min_df=min_df).fit(tuple(c[rows[tr]] for c in counts))
            yield tr, te, tfidf.transform(tuple(c[rows[tr]] for c in counts)), \
                tfidf.transform(tuple(c[rows[te]] for c in counts))
    return splits


def load_encoder(path: str | None):
    """The hybrid backend's encoder (a local checkpoint; EncoderError says what is wrong with it)."""
    from models.encoder.encoder import Encoder

    return Encoder(path)


def encode(encoder, texts: list[str], progress: Progress = _quiet, chunk: int = 256) -> np.ndarray:
    """Embeddings for many texts, chunk by chunk with progress (the encoder caches them on disk)."""
    parts = []
    for start in range(0, len(texts), chunk):
        parts.append(encoder.encode(texts[start:start + chunk]))
        progress("embeddings", min(start + chunk, len(texts)), len(texts))
    return np.vstack(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)


def fit_bundle(ds: Dataset, params: TrainParams | None = None, progress: Progress = _quiet,
               counts: tuple[sparse.csr_matrix, sparse.csr_matrix] | None = None,
               clean_texts: list[str] | None = None, embeddings: np.ndarray | None = None) -> ModelBundle:
    """Fit features and every head the data has labels for.

    `counts` (hashed term counts of `ds`'s rows) and `embeddings` (hybrid) let cross-validation
    compute each text's features only once.
    """
    params = params or TrainParams()
    if params.backend not in BACKENDS:
        raise ValueError(f"unknown backend {params.backend!r}; available: {', '.join(BACKENDS)}")
    if params.backend == "finetune":  # its own features and heads: nothing below applies
        from training.finetune import fit_finetune_bundle  # here, so only this backend loads torch

        return fit_finetune_bundle(ds, params, progress, clean_texts)
    counter = NgramCounter(Segmenter(params.segmenter), params.word_ngrams, params.char_ngrams, params.n_features)
    texts = None
    if counts is None or (params.backend == "hybrid" and embeddings is None):
        texts = clean_texts if clean_texts is not None else [clean(t) for t in ds.texts]
    if counts is None:
        counts = count_terms(counter, texts, progress)
    tfidf = BlockTfidf(min_df=params.min_df).fit(counts)
    X = tfidf.transform(counts)
    bundle = ModelBundle(counter=counter, tfidf=tfidf, heads={}, config=params.predict)
    E = None
    if params.backend == "hybrid":
        bundle.encoder = load_encoder(params.encoder)
        E = embeddings if embeddings is not None else encode(bundle.encoder, texts, progress)
        bundle.meta["encoder"] = bundle.encoder.describe()
    labels: dict[str, list[str]] = {}
    for head in ("category", "cause"):
        if head not in ds.heads:
            continue
        progress(f"head {head}", 0, 1)
        idx = labelled(ds, head)
        y = ds.frame[head].iloc[idx].tolist()
        if head == "category" and ds.multilabel:
            model = MultiLabelTextClassifier(C=params.C, threshold=params.multilabel_threshold).fit(
                X[idx], y, cv=refit_idf_splits(counts, idx, params.min_df))
        elif E is not None:
            model = HybridTextClassifier(C=params.C, class_weight=params.class_weight).fit(
                X[idx], E[idx], np.array(y), cv=refit_idf_splits(counts, idx, params.min_df))
        else:
            model = LinearTextClassifier(C=params.C, class_weight=params.class_weight).fit(
                X[idx], np.array(y), cv=refit_idf_splits(counts, idx, params.min_df))
        bundle.heads[head] = model
        labels[head] = [str(c) for c in model.classes_]
        progress(f"head {head}", 1, 1)
    if "risk" in ds.heads:
        progress("head risk", 0, 1)
        idx = labelled(ds, "risk")
        y = ds.frame["risk"].iloc[idx].astype(int).to_numpy()
        frame = ds.frame.iloc[idx].reset_index(drop=True)
        numeric, categorical = split_feature_kinds(frame, ds.features)
        bundle.structured = StructuredEncoder(numeric=numeric, categorical=categorical).fit(frame)
        S = bundle.structured.transform(frame)
        times = frame["time"].to_numpy() if "time" in frame else None
        batches = frame["batch"].to_numpy() if "batch" in frame else None
        risk = RiskClassifier(C_text=params.risk_C_text, C_stack=params.risk_C_stack).fit(
            X[idx], S, y, cv=refit_idf_splits(counts, idx, params.min_df, batches), groups=bundle.structured.groups_,
            scaled=bundle.structured.scaled_columns_, times=times, E=None if E is None else E[idx],
            missing_flags=bundle.structured.missing_flags_)
        # Every row scored by models that never saw its fold (its batch, where batches are known):
        # the thresholds and the figures that say how the levels will do on new writers.
        cross = risk.cross_fit_score_
        del risk.cross_fit_score_
        bundle.heads["risk"] = risk
        bundle.risk_thresholds = choose_thresholds(cross, y, params.predict)
        bundle.meta["risk_reference_histogram"] = score_histogram(cross)
        bundle.meta["risk_cross_fit"] = {
            "folds": "whole batches held out" if batches is not None else "stratified", "rows": int(len(y)),
            **risk_metrics(y, cross), "levels": level_metrics(y, levels_of(cross, bundle.risk_thresholds))}
        # What the service should see: the share of requests at or above each level (watched by the
        # digest and /metrics against the rate actually raised).
        bundle.meta["expected_alert_rates"] = {level: figures["alert_rate"]
                                               for level, figures in bundle.meta["risk_cross_fit"]["levels"].items()}
        bundle.meta["structured_features"] = {"numeric": numeric, "categorical": categorical,
                                              "selection": risk.field_selection_}
        progress("head risk", 1, 1)
    bundle.meta["labels"] = labels
    bundle.meta["params"] = params.as_dict()
    return bundle
