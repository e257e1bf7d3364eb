"""Feature extraction: hashed word and character n-grams with TF-IDF, and structured fields.

Hashing keeps the bundle small and needs no vocabulary; the phrase behind a feature is recovered
from the text being explained, so explanations still name real words.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import normalize as l2_normalize

from models.text import Segmenter

_NON_WORD = re.compile(r"[\W_]+")
_PRIME = np.uint64(0x100000001B3)
_CHAR_SALT, _WORD_SALT, _BIGRAM_SALT = np.uint64(0x9E37), np.uint64(0x7F4A), np.uint64(0x3C6E)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads nearby inputs over all 64 bits (wrapping uint64 arithmetic)."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


class NgramCounter(BaseEstimator, TransformerMixin):
    """Texts → hashed term counts: one block of word 1–2-grams and one of character n-grams.

    Character n-grams are hashed arithmetically over code points and words through crc32, both in
    numpy, which is several times faster than hashing term strings. Stateless (no fit), so
    cross-validation counts each text once and fits only the IDF per fold.
    """

    def __init__(self, segmenter: Segmenter | None = None, word_ngrams: int = 2,
                 char_ngrams: tuple[int, int] = (1, 2), n_features: int = 2**20):
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

    def _word_columns(self, words: list[str]) -> np.ndarray:
        h = np.fromiter((zlib.crc32(w.encode()) for w in words), dtype=np.uint64, count=len(words))
        cols = [_mix(h * _PRIME + _WORD_SALT)]
        if self.word_ngrams >= 2 and len(words) > 1:
            cols.append(_mix((h[:-1] * _PRIME + h[1:]) * _PRIME + _BIGRAM_SALT))
        return np.concatenate(cols) % np.uint64(self.n_features)

    def _char_columns(self, chars: str) -> np.ndarray:
        """Columns of every char n-gram: all 1-grams, then all 2-grams, … (see `phrases`)."""
        cps = np.frombuffer(chars.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        cols = []
        lo, hi = self.char_ngrams
        for n in range(lo, hi + 1):
            m = len(cps) - n + 1
            if m <= 0:
                break
            h = cps[:m].copy()
            for k in range(1, n):
                h = h * _PRIME + cps[k:k + m]
            cols.append(_mix(h * _PRIME + np.uint64(n) + _CHAR_SALT))
        if not cols:
            return np.zeros(0, dtype=np.uint64)
        return np.concatenate(cols) % np.uint64(self.n_features)

    def _parts(self, text: str) -> tuple[list[str], str]:
        seg = self._seg()
        prepared = seg.prepare(text)
        return seg.cut_prepared(prepared), _NON_WORD.sub("", prepared)

    def transform(self, texts: Sequence[str]) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
        word_cols, char_cols = [], []
        for text in texts:
            words, chars = self._parts(text)
            word_cols.append(self._word_columns(words))
            char_cols.append(self._char_columns(chars))
        return self._counts(word_cols), self._counts(char_cols)

    def _counts(self, columns: list[np.ndarray]) -> sparse.csr_matrix:
        indptr = np.zeros(len(columns) + 1, dtype=np.int64)
        np.cumsum([len(c) for c in columns], out=indptr[1:])
        indices = np.concatenate(columns).astype(np.int32) if columns else np.zeros(0, np.int32)
        m = sparse.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr),
                              shape=(len(columns), self.n_features))
        m.sum_duplicates()  # repeated terms become counts
        return m

    def attribute(self, text: str, columns: np.ndarray, values: np.ndarray) -> np.ndarray:
        """One score per character of `text`: each feature column's value (a contribution to a
        decision) spread evenly over the characters its occurrences in the text cover, a column seen
        k times giving each occurrence 1/k. Columns index the stacked space (char block after the word
        block), as `transform`'s blocks side by side do. models/explain.py turns this into phrases."""
        seg = self._seg()
        prepared = seg.prepare(text)
        # Where each character of `prepared` comes from in `text` (NFKC may expand one character).
        origin = np.arange(len(text)) if len(prepared) == len(text) else np.array(
            [i for i, ch in enumerate(text) for _ in seg.prepare(ch)], dtype=np.int64)
        scores = np.zeros(len(text), dtype=np.float64)
        if len(origin) != len(prepared) or len(columns) == 0:
            return scores
        spans = seg.spans_prepared(prepared)
        kept = [i for i, ch in enumerate(prepared) if not _NON_WORD.fullmatch(ch)]  # positions of `chars`
        occurrences: list[tuple[np.ndarray, np.ndarray]] = []  # (columns, character positions per occurrence)
        if spans:
            word_cols = self._word_columns([w for w, _, _ in spans]).astype(np.int64)
            ranges = [np.arange(a, b) for _, a, b in spans]
            if self.word_ngrams >= 2:
                ranges += [np.concatenate([ranges[k], ranges[k + 1]]) for k in range(len(spans) - 1)]
            occurrences += [(np.array([c]), r) for c, r in zip(word_cols.tolist(), ranges, strict=True)]
        char_cols = self._char_columns("".join(prepared[i] for i in kept)).astype(np.int64) + self.n_features
        lo, hi = self.char_ngrams
        pos = np.asarray(kept, dtype=np.int64)
        start = 0
        for n in range(lo, hi + 1):
            m = len(kept) - n + 1
            if m <= 0:
                break
            occurrences.append((char_cols[start:start + m], pos[np.arange(m)[:, None] + np.arange(n)]))
            start += m
        all_cols = np.concatenate([c for c, _ in occurrences])
        seen, counts = np.unique(all_cols, return_counts=True)
        value = dict(zip(np.asarray(columns).tolist(), np.asarray(values, dtype=np.float64).tolist(), strict=True))
        per_occurrence = {c: value.get(c, 0.0) / k for c, k in zip(seen.tolist(), counts.tolist(), strict=True)}
        on_prepared = np.zeros(len(prepared), dtype=np.float64)
        for cols, where in occurrences:
            v = np.array([per_occurrence[c] for c in cols.tolist()])
            where = where.reshape(len(cols), -1)
            np.add.at(on_prepared, where.ravel(), np.repeat(v / where.shape[1], where.shape[1]))
        np.add.at(scores, origin, on_prepared)
        return scores


class BlockTfidf(BaseEstimator, TransformerMixin):
    """Sublinear TF-IDF per block, each block L2-normalised, blocks side by side."""

    def __init__(self, min_df: int = 1):
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
        n_num = len(self.numeric)
        self.groups_ = {c: [j, n_num + j] for j, c in enumerate(self.numeric)}
        self.missing_flags_ = {c: n_num + j for j, c in enumerate(self.numeric)}
        for col in self.categorical:
            start = len(self.feature_names_)
            self.feature_names_ += [f"{col}={v}" for v in self.levels_[col]] + [f"{col}=<其他>"]
            self.groups_[col] = list(range(start, len(self.feature_names_)))
        self.scaled_columns_ = list(range(n_num))  # log1p values; flags and one-hots stay 0/1
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


def _is_cjk(s: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in s)
