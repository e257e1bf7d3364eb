"""The plain pipeline every figure is compared with: jieba word 1–2-grams + char 1–3-grams TF-IDF
and a linear SVM, as scikit-learn composes it out of the box (the reference in the data README)."""

from __future__ import annotations

import jieba
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import LinearSVC


def jieba_tokens(text: str) -> list[str]:
    return [t for t in jieba.lcut(text) if t.strip()]


def plain_pipeline(C: float = 1.0) -> Pipeline:
    jieba.initialize()
    return Pipeline([
        ("features", FeatureUnion([
            ("words", TfidfVectorizer(tokenizer=jieba_tokens, token_pattern=None, ngram_range=(1, 2),
                                      sublinear_tf=True, lowercase=True)),
            ("chars", TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)),
        ])),
        ("svm", LinearSVC(C=C)),
    ])
