"""What the prediction heads are: the project's own classifiers, not scikit-learn estimators (their
`fit` takes calibration folds and several arrays), so they do not claim scikit-learn's contract; and a
head pickled while the classes still derived from scikit-learn's BaseEstimator loads unchanged, so
bundles saved before keep loading without a bundle-format bump."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.svm import LinearSVC

from models import heads
from models.heads import HybridTextClassifier, LinearTextClassifier, MultiLabelTextClassifier, RiskClassifier

HEADS = [LinearTextClassifier, HybridTextClassifier, MultiLabelTextClassifier, RiskClassifier]


def synthetic(n: int = 240, seed: int = 0):
    """Bags of words (word k < 3 says class k), embeddings that echo the class, two structured columns."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    words = rng.integers(3, 40, size=(n, 5))
    words[:, 0] = np.where(rng.random(n) < 0.8, y, words[:, 0])
    X = sparse.csr_matrix((np.ones(n * 5), (np.repeat(np.arange(n), 5), words.ravel())), shape=(n, 40))
    E = rng.normal(size=(n, 8)) + np.eye(8)[y] * 2
    S = np.column_stack([rng.poisson(1.0, n).astype(float), (rng.random(n) < 0.5).astype(float)])
    labels = np.array(["信用卡", "借记卡", "个人贷款"])[y]
    return X, E, S, labels, (y == 0).astype(int)


def fit(name: str, cls: type, X, E, S, labels, risk):
    """The head `name` built from `cls` and fitted as training/fit.py fits it (default folds)."""
    if name == "LinearTextClassifier":
        return cls(C=1.0).fit(X, labels)
    if name == "HybridTextClassifier":
        return cls(C=1.0, calibration_folds=3).fit(X, E, labels)
    if name == "MultiLabelTextClassifier":
        return cls(threshold=0.4).fit(X, [[lab] if k % 5 else [lab, "其他"] for k, lab in enumerate(labels)])
    return cls(folds=3).fit(X, S, risk, groups={"repeat_count": [0], "flag": [1]})


def score(name: str, head, X, E, S):
    if name == "HybridTextClassifier":
        return head.predict_proba(X, E)
    if name == "RiskClassifier":
        return head.predict_proba(X, S)
    return head.predict_proba(X)


@pytest.mark.parametrize("cls", HEADS, ids=lambda c: c.__name__)
def test_the_heads_do_not_claim_scikit_learns_estimator_contract(cls):
    """Nothing offers a head to scikit-learn's clone, pipelines or search as if it were an estimator."""
    assert not issubclass(cls, (BaseEstimator, ClassifierMixin))
    with pytest.raises(TypeError, match="get_params"):
        clone(cls())


def _estimator_layout(cls) -> type:
    """`cls` as it was declared before: the same body under (ClassifierMixin, BaseEstimator)."""
    body = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
    return type(cls.__name__, (ClassifierMixin, BaseEstimator), body)


@pytest.mark.parametrize("cls", HEADS, ids=lambda c: c.__name__)
def test_a_head_pickled_as_an_estimator_loads_and_scores_the_same(cls, monkeypatch):
    X, E, S, labels, risk = synthetic()
    name, old_cls = cls.__name__, _estimator_layout(cls)
    monkeypatch.setattr(heads, name, old_cls)  # pickle finds the class by its module and name
    stored = pickle.dumps(fit(name, old_cls, X, E, S, labels, risk))
    before = pickle.loads(stored)  # as the old classes loaded it (weights stored as float16)
    monkeypatch.undo()

    loaded = pickle.loads(stored)
    assert type(before) is old_cls and type(loaded) is cls
    assert vars(loaded).keys() == vars(before).keys()  # BaseEstimator added nothing to a models.* pickle
    np.testing.assert_array_equal(score(name, loaded, X, E, S), score(name, before, X, E, S))
    np.testing.assert_array_equal(loaded.classes_, before.classes_)


def test_fitting_on_the_used_columns_gives_the_scores_of_a_fit_on_all_columns():
    # Hashed features: a few used columns among many; liblinear on the used ones solves the same problem.
    X, _, _, labels, risk = synthetic()
    wide = sparse.csr_matrix((X.data, X.indices * 5000, X.indptr), shape=(X.shape[0], 40 * 5000))
    cut = LinearTextClassifier(C=1.0).fit(wide, labels)
    plain = LinearSVC(C=1.0, random_state=heads.LIBLINEAR_SEED).fit(wide, np.unique(labels, return_inverse=True)[1])
    # the same optimum up to liblinear's stopping tolerance (and float32 weights)
    np.testing.assert_allclose(cut.decision_function(wide), plain.decision_function(wide), atol=5e-3)
    assert np.all(cut.weights_.active % 5000 == 0)  # the weights sit on the columns the words hash to
