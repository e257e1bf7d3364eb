"""What every backend's fit shares (`training/fit.py` and the finetune loop in `training/finetune.py`):
the training parameters, and the steps each backend ends with on its out-of-fold scores (risk-level
thresholds, the drift reference histogram) and the split of structured fields into numeric and
categorical. Its own module so the two fitting modules import it rather than each other."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.bundle import PredictConfig
from models.levels import RiskLevel

Progress = Callable[[str, int, int], None]


@dataclass
class FinetuneParams:
    """The finetune backend's loop (training/finetune.py). Defaults sized for a 2-core CPU; raise
    max_length and epochs on a GPU."""

    max_length: int = 128
    batch_size: int = 16
    lr: float = 3e-5
    head_lr: float = 1e-3  # fresh heads (and the structured fields' weights) learn faster than the encoder
    epochs: int = 3
    patience: int = 1  # epochs without a better validation loss before stopping
    valid_frac: float = 0.15
    warmup: float = 0.1  # share of the steps with a rising learning rate
    weight_decay: float = 0.01
    dropout: float = 0.1
    freeze_embeddings: bool = True
    max_steps: int | None = None  # a hard budget (e.g. a CPU smoke run); None: epochs decide
    device: str = "auto"
    seed: int = 0


@dataclass
class TrainParams:
    backend: str = "linear"
    segmenter: str = "rjieba"
    n_features: int = 2**20
    word_ngrams: int = 2
    char_ngrams: tuple[int, int] = (1, 2)
    C: float = 1.5
    class_weight: str | None = "balanced"
    min_df: int = 1
    risk_C_text: float = 1.0  # chosen by log-loss on held-out writer batches (cross-fit), not on bank_dev
    risk_C_stack: float = 0.3
    multilabel_threshold: float = 0.4
    encoder: str | None = None  # hybrid/finetune: a local checkpoint folder (default: the converted e5, models/encoder_e5)
    finetune: FinetuneParams = field(default_factory=FinetuneParams)  # the finetune backend's training loop
    predict: PredictConfig = field(default_factory=PredictConfig)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_feature_kinds(frame: pd.DataFrame, features: list[str]) -> tuple[list[str], list[str]]:
    """Numeric where nearly every non-empty value parses as a number, categorical otherwise."""
    numeric, categorical = [], []
    for col in features:
        values = frame[col].replace("", np.nan).dropna()
        parsed = pd.to_numeric(values, errors="coerce")
        (numeric if len(values) and parsed.notna().mean() >= 0.95 else categorical).append(col)
    return numeric, categorical


def lowest_threshold_at_precision(score: np.ndarray, y: np.ndarray, precision: float) -> float | None:
    """The lowest score t such that, of the rows scoring t or more, at least `precision` are positive
    (None when no t reaches it)."""
    score, y = np.asarray(score, dtype=float), np.asarray(y, dtype=int)
    order = np.argsort(-score, kind="stable")
    s, hits = score[order], np.cumsum(y[order])
    ends = np.flatnonzero(np.append(s[1:] != s[:-1], True))  # the last row of each tie: t admits all of them
    ok = ends[hits[ends] / (ends + 1) >= precision]
    return float(s[ok.max()]) if len(ok) else None


def choose_thresholds(score: np.ndarray, y: np.ndarray, config: PredictConfig) -> dict[str, float]:
    """Risk-level cut-offs: 中 catches `medium_recall` of the disputes; 高 is the lowest score whose alerts
    reach `high_precision` (or, without one or where none reaches it, catches `high_recall` of them)."""
    pos = np.sort(np.asarray(score)[np.asarray(y) == 1])
    if len(pos) == 0:
        return {RiskLevel.HIGH.value: 1.0, RiskLevel.MEDIUM.value: 1.0}
    medium = float(np.quantile(pos, 1 - config.medium_recall, method="lower"))
    high = None
    if config.high_precision is not None:
        high = lowest_threshold_at_precision(score, y, config.high_precision)
    if high is None:
        high = float(np.quantile(pos, 1 - config.high_recall, method="lower"))
    # Rounded down: a cut-off rounded up would drop the row it was chosen at.
    return {RiskLevel.HIGH.value: _floor6(max(high, medium)), RiskLevel.MEDIUM.value: _floor6(medium)}


def _floor6(value: float) -> float:
    return math.floor(value * 1e6) / 1e6


def score_histogram(score: np.ndarray, bins: int = 10) -> list[float]:
    """Share of scores per tenth of [0, 1]: the reference for drift (PSI) checks."""
    counts = np.histogram(np.clip(score, 0, 1), bins=bins, range=(0, 1))[0]
    return (counts / max(counts.sum(), 1)).round(6).tolist()
