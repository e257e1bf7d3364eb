"""Feature extraction: hashed word and character n-grams with TF-IDF, and structured fields.

Hashing keeps the bundle small and needs no vocabulary; the phrase behind a feature is recovered
from the text being explained, so explanations still name real words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction import FeatureHasher
from sklearn.preprocessing import normalize as l2_normalize

from models.text import Segmenter

_NON_WORD = re.compile(r"[\W_]+")
WORD, BIGRAM, CHAR = "w", "b", "c"


class NgramCounter(BaseEstimator, TransformerMixin):
    """Texts → hashed term counts: one block of word n-grams and one of character n-grams.

    Stateless (no fit), so cross-validation counts each text once and fits only the IDF per fold.
    """

    def __init__(self, segmenter: Segmenter | None = None, word_ngrams: int = 2,
                 char_ngrams: tuple[int, int] = (1, 3), n_features: int = 2**20):
        self.segmenter = segmenter
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.n_features = n_features

    def fit(self, texts=None, y=None):
        return self

    def _seg(self) -> Segmenter:
        if self.segmenter is None:
            self.segmenter = Segmenter()
        return self.segmenter

    def terms(self, text: str) -> tuple[list[str], list[str]]:
        """The word-block and char-block terms of one text, prefixed by their kind."""
        seg = self._seg()
        words = seg.cut(text)
        word_terms = [WORD + w for w in words]
        if self.word_ngrams >= 2:
            word_terms += [BIGRAM + a + " " + b for a, b in zip(words, words[1:], strict=False)]
        chars = _NON_WORD.sub("", seg.prepare(text))
        lo, hi = self.char_ngrams
        char_terms = [CHAR + chars[i:i + n] for n in range(lo, hi + 1) for i in range(len(chars) - n + 1)]
        return word_terms, char_terms

    def transform(self, texts: Sequence[str]) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
        pairs = [self.terms(t) for t in texts]
        hasher = FeatureHasher(n_features=self.n_features, input_type="string", alternate_sign=False,
                               dtype=np.float32)
        return (hasher.transform(p[0] for p in pairs).tocsr(), hasher.transform(p[1] for p in pairs).tocsr())


class BlockTfidf(BaseEstimator, TransformerMixin):
    """Sublinear TF-IDF per block, each block L2-normalised, blocks side by side."""

    def __init__(self, min_df: int = 2):
        self.min_df = min_df

    def fit(self, blocks, y=None):
        self.idf_ = []
        for block in blocks:
            n = block.shape[0]
            df = np.bincount(block.indices, minlength=block.shape[1])
            idf = np.log((1 + n) / (1 + df)) + 1.0
            idf[df < self.min_df] = 0.0  # unseen/rare terms carry no weight
            self.idf_.append(idf.astype(np.float32))
        return self

    def transform(self, blocks) -> sparse.csr_matrix:
        out = []
        for block, idf in zip(blocks, self.idf_, strict=True):
            b = block.copy()
            np.log1p(b.data, out=b.data)
            b.data *= idf[b.indices]
            out.append(l2_normalize(b))
        return sparse.hstack(out, format="csr")


class StructuredEncoder(BaseEstimator, TransformerMixin):
    """Structured fields → dense features; an absent column or value counts as unknown, not an error.

    Numeric fields become log1p(value) and a missing flag; categorical fields one-hot over values seen
    at least `min_count` times in training (comma-separated values, like CFPB tags, count each).
    """

    def __init__(self, numeric: Sequence[str] = (), categorical: Sequence[str] = (), min_count: int = 5):
        self.numeric = numeric
        self.categorical = categorical
        self.min_count = min_count

    def fit(self, frame: pd.DataFrame, y=None):
        self.levels_ = {}
        for col in self.categorical:
            values = _split_values(frame[col]) if col in frame else []
            counts = pd.Series([v for vs in values for v in vs], dtype=object).value_counts()
            self.levels_[col] = sorted(counts[counts >= self.min_count].index.tolist())
        self.feature_names_ = [f"{c}:log1p" for c in self.numeric] + [f"{c}:missing" for c in self.numeric]
        for col in self.categorical:
            self.feature_names_ += [f"{col}={v}" for v in self.levels_[col]] + [f"{col}=<其他>"]
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        n = len(frame)
        parts = []
        num = np.zeros((n, len(self.numeric)), dtype=np.float32)
        missing = np.zeros_like(num)
        for j, col in enumerate(self.numeric):
            values = pd.to_numeric(frame[col], errors="coerce") if col in frame else pd.Series([np.nan] * n)
            v = values.to_numpy(dtype=np.float64)
            missing[:, j] = np.isnan(v)
            num[:, j] = np.log1p(np.clip(np.nan_to_num(v, nan=0.0), 0, None))
        parts += [num, missing]
        for col in self.categorical:
            levels = self.levels_[col]
            index = {v: i for i, v in enumerate(levels)}
            onehot = np.zeros((n, len(levels) + 1), dtype=np.float32)
            values = _split_values(frame[col]) if col in frame else [[] for _ in range(n)]
            for i, vs in enumerate(values):
                for v in vs:
                    onehot[i, index.get(v, len(levels))] = 1.0
            parts.append(onehot)
        return np.hstack(parts) if parts else np.zeros((n, 0), dtype=np.float32)


def _split_values(series: pd.Series) -> list[list[str]]:
    out = []
    for v in series.tolist():
        if v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == "":
            out.append([])
        else:
            out.append([p.strip() for p in str(v).split(",") if p.strip()])
    return out


def term_phrase(term: str) -> str:
    """The readable phrase behind a feature term ('b个性化 分期' → '个性化分期')."""
    body = term[1:]
    return body.replace(" ", "") if _is_cjk(body) else body


def _is_cjk(s: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in s)
