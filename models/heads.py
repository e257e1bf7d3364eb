"""Prediction heads: calibrated multi-class, multi-label and binary-risk classifiers.

They are this project's own classes, fitted by `training/fit.py` and scored by `models/bundle.py`,
not scikit-learn estimators: they borrow its method names (fit / predict / predict_proba, fitted
attributes ending in `_`) and use its models inside, but `fit` takes the calibration folds (`cv`)
and the hybrid and risk heads take several arrays (text features, embeddings, structured fields), so
they have no get_params / set_params and `sklearn.base.clone`, pipelines and grid search do not apply.
Once fitted, each keeps only its `LinearWeights` and a few calibration numbers, so the bundle is small
and prediction is one sparse product.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy import sparse
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax, softmax
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold
from sklearn.svm import LinearSVC


class LinearWeights:
    """A linear layer over hashed features, kept only for the columns that carry weight.

    Of 2^21 hashed columns a fitted model uses a few hundred thousand; storing those rows densely
    (float16 on disk) keeps bundles small, and one sorted lookup maps a text's columns onto them.
    """

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, columns: np.ndarray | None = None):
        """`coef` (n_outputs, n_columns) over all hashed columns, or over `columns` (sorted) only."""
        coef = np.atleast_2d(np.asarray(coef, dtype=np.float32))
        nonzero = np.flatnonzero(np.any(coef != 0, axis=0))
        self.active = (nonzero if columns is None else np.asarray(columns)[nonzero]).astype(np.int32)
        self.W = np.ascontiguousarray(coef[:, nonzero].T)  # (n_active, n_outputs)
        self.b = np.asarray(intercept, dtype=np.float32).ravel()

    def _positions(self, columns: np.ndarray) -> np.ndarray:
        """Row of W for each hashed column, -1 where the column carries no weight. A dense lookup
        table (4 bytes per hashed column, built on first use, never pickled) makes this O(1)."""
        lookup = getattr(self, "_lookup", None)
        if lookup is None:
            lookup = np.full(int(self.active[-1]) + 1 if len(self.active) else 1, -1, dtype=np.int32)
            lookup[self.active] = np.arange(len(self.active), dtype=np.int32)
            self._lookup = lookup
        pos = np.full(len(columns), -1, dtype=np.int32)
        inside = columns < len(lookup)
        pos[inside] = lookup[columns[inside]]
        return pos

    def __call__(self, X: sparse.csr_matrix) -> np.ndarray:
        pos = self._positions(X.indices)
        hit = pos >= 0
        Xa = sparse.csr_matrix((np.where(hit, X.data, 0).astype(np.float32), np.maximum(pos, 0), X.indptr),
                               shape=(X.shape[0], max(len(self.active), 1)))
        return np.asarray(Xa @ self.W) + self.b if len(self.active) else np.zeros((X.shape[0], len(self.b))) + self.b

    def column_weights(self, columns: np.ndarray, output: int) -> np.ndarray:
        """The weight of each hashed column for one output (0 where the column is unused)."""
        pos = self._positions(columns)
        return np.where(pos >= 0, self.W[np.maximum(pos, 0), output] if len(self.active) else 0.0, 0.0)

    def __getstate__(self):
        return {"active": self.active, "W": self.W.astype(np.float16), "b": self.b}

    def __setstate__(self, state):
        self.active, self.b = state["active"], state["b"]
        self.W = state["W"].astype(np.float32)


class UsedColumns:
    """The hashed columns a training matrix uses, and matrices cut down to them.

    liblinear keeps a dense weight per column and class and sweeps it on every pass: over 2^21 hashed
    columns that cost ten times the fit itself on a few hundred rows. Columns no training row uses get
    weight 0 anyway, so fitting on the used ones solves the same problem.
    """

    def __init__(self, X) -> None:
        self.columns = np.unique(sparse.csr_matrix(X).indices)

    def cut(self, X) -> sparse.csr_matrix:
        return sparse.csr_matrix(X)[:, self.columns]


EMBEDDING_FIELD = "text embedding"
# liblinear visits rows in a random order; unseeded it draws the seed from numpy's global state, so
# the same data trained twice gave two models (and a promotion gate that refused the retrained twin).
LIBLINEAR_SEED = 0


def stratified_folds(y: np.ndarray, n_splits: int, random_state: int = 0):
    """Shuffled stratified folds; plain shuffled folds where a class has a single row."""
    smallest = np.bincount(np.unique(y, return_inverse=True)[1]).min()
    if smallest < 2:
        return KFold(n_splits, shuffle=True, random_state=random_state).split(np.zeros(len(y)))
    return StratifiedKFold(min(n_splits, smallest), shuffle=True, random_state=random_state).split(
        np.zeros(len(y)), y)


def batch_folds(y: np.ndarray, n_splits: int, batches: np.ndarray | None = None, random_state: int = 0):
    """Folds that keep every batch (rows written together, in one voice) on one side, so that each row
    is scored by a model that never saw its batch's phrasing; stratified folds where the rows carry
    fewer than three batches."""
    if batches is None or len(np.unique(batches)) < 3:
        return stratified_folds(y, n_splits, random_state)
    k = min(n_splits, len(np.unique(batches)))
    return StratifiedGroupKFold(k, shuffle=True, random_state=random_state).split(np.zeros(len(y)), y, batches)


def sliced_splits(X):
    """Out-of-fold splits that slice already-built features. fit_bundle passes a better provider that
    refits the IDF inside each fold, so held-out rows look like new text (their rare terms unseen)."""
    def splits(y: np.ndarray, n_splits: int):
        for tr, te in stratified_folds(y, n_splits):
            yield tr, te, X[tr], X[te]
    return splits


def fit_temperature(scores: np.ndarray, y_index: np.ndarray) -> float:
    """The softmax temperature that minimises the log-loss of out-of-fold scores."""
    def nll(log_t: float) -> float:
        lp = log_softmax(scores * np.exp(log_t), axis=1)
        return -lp[np.arange(len(y_index)), y_index].mean()
    return float(np.exp(minimize_scalar(nll, bounds=(-5, 5), method="bounded").x))


class LinearTextClassifier:
    """Multi-class linear SVM whose scores are calibrated by temperature scaling.

    The temperature is fitted on out-of-fold scores, so probabilities mean what they say on unseen
    text; argmax is unchanged by calibration.
    """

    def __init__(self, C: float = 1.5, class_weight: str | None = None, calibration_folds: int = 3):
        self.C = C
        self.class_weight = class_weight
        self.calibration_folds = calibration_folds

    def _svm(self) -> LinearSVC:
        return LinearSVC(C=self.C, class_weight=self.class_weight, random_state=LIBLINEAR_SEED)

    @staticmethod
    def _scores(svm: LinearSVC, X) -> np.ndarray:
        d = svm.decision_function(X)
        return np.column_stack([-d, d]) if d.ndim == 1 else d

    def fit(self, X, y, cv=None, keep_oof: bool = False):
        """`cv(y, k)` yields (train, test, X_train, X_test) for the calibration folds; `keep_oof`
        keeps the out-of-fold scores and folds for a stacking head built on top."""
        self.classes_, y_index = np.unique(np.asarray(y), return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError("a classifier needs at least two classes")
        oof = np.zeros((X.shape[0], len(self.classes_)))
        folds = []
        for tr, te, X_tr, X_te in (cv or sliced_splits(X))(y_index, self.calibration_folds):
            used = UsedColumns(X_tr)
            svm = self._svm().fit(used.cut(X_tr), y_index[tr])
            scores = self._scores(svm, used.cut(X_te))
            oof[np.ix_(te, np.unique(y_index[tr]))] = scores
            folds.append((tr, te))
        self.temperature_ = fit_temperature(oof, y_index)
        if keep_oof:
            self.oof_scores_, self.folds_ = oof, folds
        used = UsedColumns(X)
        svm = self._svm().fit(used.cut(X), y_index)
        coef = svm.coef_ if len(self.classes_) > 2 else np.vstack([-svm.coef_[0], svm.coef_[0]])
        icpt = svm.intercept_ if len(self.classes_) > 2 else np.array([-svm.intercept_[0], svm.intercept_[0]])
        self.weights_ = LinearWeights(coef, icpt, used.columns)
        return self

    def decision_function(self, X) -> np.ndarray:
        return self.weights_(sparse.csr_matrix(X))

    def predict_proba(self, X) -> np.ndarray:
        return softmax(self.decision_function(X) * self.temperature_, axis=1)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]

    def contributions(self, x_row: sparse.csr_matrix, class_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(column, weight × value) of the features present in one row, for one class."""
        return x_row.indices, x_row.data * self.weights_.column_weights(x_row.indices, class_index)


class HybridTextClassifier:
    """The linear text head and a logistic regression on frozen encoder embeddings, stacked.

    Both are fitted on the same folds; a small multinomial regression learns from their out-of-fold
    log-probabilities how far to trust each, which beats putting both feature sets in one SVM (the
    sparse TF-IDF block swamps 384 dense dimensions). Explanations come from the linear part.
    """

    def __init__(self, C: float = 1.5, class_weight: str | None = None, calibration_folds: int = 5,
                 C_embed: float = 10.0, C_stack: float = 1.0):
        self.C = C
        self.class_weight = class_weight
        self.calibration_folds = calibration_folds
        self.C_embed = C_embed
        self.C_stack = C_stack

    def _embed_lr(self) -> LogisticRegression:
        return LogisticRegression(C=self.C_embed, max_iter=3000, class_weight=self.class_weight)

    def fit(self, X, E: np.ndarray, y, cv=None):
        self.linear_ = LinearTextClassifier(self.C, self.class_weight, self.calibration_folds).fit(
            X, y, cv, keep_oof=True)
        self.classes_ = self.linear_.classes_
        y_index = np.searchsorted(self.classes_, np.asarray(y))
        k = len(self.classes_)
        oof_embed = np.full((len(y_index), k), np.log(1.0 / k))
        for tr, te in self.linear_.folds_:
            seen = np.unique(y_index[tr])
            lr = self._embed_lr().fit(E[tr], y_index[tr])
            oof_embed[np.ix_(te, seen)] = lr.predict_log_proba(E[te])
        oof_linear = log_softmax(self.linear_.oof_scores_ * self.linear_.temperature_, axis=1)
        del self.linear_.oof_scores_, self.linear_.folds_
        self.embed_ = self._embed_lr().fit(E, y_index)
        self.stack_ = LogisticRegression(C=self.C_stack, max_iter=3000).fit(
            np.hstack([oof_linear, oof_embed]), y_index)
        return self

    def _stack_input(self, X, E: np.ndarray) -> np.ndarray:
        linear = log_softmax(self.linear_.decision_function(X) * self.linear_.temperature_, axis=1)
        embed = np.full((E.shape[0], len(self.classes_)), -50.0)
        embed[:, self.embed_.classes_] = self.embed_.predict_log_proba(E)
        return np.hstack([linear, embed])

    def predict_proba(self, X, E: np.ndarray) -> np.ndarray:
        proba = np.zeros((E.shape[0], len(self.classes_)))
        proba[:, self.stack_.classes_] = self.stack_.predict_proba(self._stack_input(X, E))
        return proba

    def predict(self, X, E: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X, E).argmax(axis=1)]

    def contributions(self, x_row: sparse.csr_matrix, class_index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.linear_.contributions(x_row, class_index)


class MultiLabelTextClassifier:
    """One-vs-rest linear SVMs with Platt-scaled scores; a text gets every label over its threshold
    (and always its best one)."""

    def __init__(self, C: float = 1.0, threshold: float = 0.5, calibration_folds: int = 3):
        self.C = C
        self.threshold = threshold
        self.calibration_folds = calibration_folds

    def fit(self, X, Y, cv=None):
        """Y: a list of label lists; `cv` as for LinearTextClassifier."""
        self.classes_ = np.array(sorted({lab for labels in Y for lab in labels}))
        index = {c: i for i, c in enumerate(self.classes_)}
        M = np.zeros((X.shape[0], len(self.classes_)), dtype=np.int8)
        for i, labels in enumerate(Y):
            for lab in labels:
                M[i, index[lab]] = 1
        coefs, icpts, self.platt_ = [], [], []
        used_all = UsedColumns(X)
        X_used = used_all.cut(X)
        for k in range(len(self.classes_)):
            yk = M[:, k]
            oof = np.zeros(len(yk))
            for tr, te, X_tr, X_te in (cv or sliced_splits(X))(yk, self.calibration_folds):
                # A rare label can be absent from a fold's training part: it scores "no" there.
                if len(np.unique(yk[tr])) == 2:
                    used = UsedColumns(X_tr)
                    svm = LinearSVC(C=self.C, random_state=LIBLINEAR_SEED).fit(used.cut(X_tr), yk[tr])
                    oof[te] = svm.decision_function(used.cut(X_te))
                else:
                    oof[te] = -1.0
            platt = LogisticRegression(C=1e4).fit(oof[:, None], yk)
            self.platt_.append((float(platt.coef_[0, 0]), float(platt.intercept_[0])))
            svm = LinearSVC(C=self.C, random_state=LIBLINEAR_SEED).fit(X_used, yk)
            coefs.append(svm.coef_[0])
            icpts.append(svm.intercept_[0])
        self.weights_ = LinearWeights(np.vstack(coefs), np.asarray(icpts), used_all.columns)
        return self

    def decision_function(self, X) -> np.ndarray:
        return self.weights_(sparse.csr_matrix(X))

    def predict_proba(self, X) -> np.ndarray:
        a = np.array([p[0] for p in self.platt_])
        b = np.array([p[1] for p in self.platt_])
        return expit(self.decision_function(X) * a + b)

    def predict(self, X) -> list[list[str]]:
        proba = self.predict_proba(X)
        out = []
        for row in proba:
            chosen = np.flatnonzero(row >= self.threshold)
            if len(chosen) == 0:
                chosen = [int(row.argmax())]
            out.append([str(self.classes_[k]) for k in chosen])
        return out

    def contributions(self, x_row: sparse.csr_matrix, class_index: int) -> tuple[np.ndarray, np.ndarray]:
        return x_row.indices, x_row.data * self.weights_.column_weights(x_row.indices, class_index)


MAX_FIELDS_PER_SUBSET = 5  # 2^5 second stages at most; beyond that only the full one and leave-one-outs


@dataclass
class Stack:
    """One second-stage logistic regression: the text logit and the columns of some fields."""

    columns: np.ndarray  # columns of X_struct it reads
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def fit(cls, text_logit: np.ndarray, X_struct: np.ndarray, y: np.ndarray, columns: list[int],
            scaled: set[int], C: float) -> Stack:
        Z = _stack_input(text_logit, X_struct[:, columns])
        mean, scale = _scaling(Z, columns, scaled)
        lr = LogisticRegression(C=C, max_iter=2000).fit((Z - mean) / scale, y)
        return cls(np.asarray(columns, dtype=np.int64), mean, scale, lr.coef_[0].astype(np.float64),
                   float(lr.intercept_[0]))

    def logit(self, text_logit: np.ndarray, X_struct: np.ndarray) -> np.ndarray:
        return ((_stack_input(text_logit, X_struct[:, self.columns]) - self.mean) / self.scale) @ self.coef \
            + self.intercept


def _stack_input(text_logit: np.ndarray, X_struct: np.ndarray) -> np.ndarray:
    return np.column_stack([text_logit, X_struct]) if X_struct.shape[1] else text_logit[:, None]


def _scaling(Z: np.ndarray, columns, scaled: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """Standardise the text logit and numeric fields; one-hot columns keep their 0/1 scale."""
    mean, scale = np.zeros(Z.shape[1]), np.ones(Z.shape[1])
    cols = [0] + [k + 1 for k, j in enumerate(columns) if j in scaled]
    mean[cols] = Z[:, cols].mean(axis=0)
    std = Z[:, cols].std(axis=0)
    scale[cols] = np.where(std > 0, std, 1.0)
    return mean, scale


class RiskClassifier:
    """Dispute probability from text and structured fields, by stacking.

    A text-only logistic regression is fitted first; its out-of-fold logit joins the structured
    features in a small second logistic regression. Appending sparse one-hot fields to the text
    model directly drowns the weak text signal (CFPB: 0.617 → 0.597 ROC-AUC). Even stacked, a field
    can hurt on later data, so fields enter one at a time, each only if it raises ROC-AUC on held-out
    rows (the latest quarter when the rows' times are known, else the out-of-fold rows). The second
    stage is fitted on out-of-fold logits, so its probabilities hold on text like the held-out folds':
    with batch folds (training/fit.py), on writers the text model never saw.

    A request that lacks a field (no repeat count from the upstream system) is scored by a second
    stage fitted without that field, not as if the field were zero: one second stage per subset of
    the kept fields.
    """

    def __init__(self, C_text: float = 0.3, C_stack: float = 0.3, folds: int = 5, min_gain: float = 0.002,
                 C_embed: float = 1.0):
        self.C_text = C_text
        self.C_stack = C_stack
        self.folds = folds
        self.min_gain = min_gain
        self.C_embed = C_embed

    def fit(self, X_text, X_struct: np.ndarray, y, cv=None, groups: dict[str, list[int]] | None = None,
            scaled: list[int] | None = None, times: np.ndarray | None = None, E: np.ndarray | None = None,
            missing_flags: dict[str, int] | None = None):
        """`groups` maps each structured field to its columns of X_struct; `scaled` lists the
        numeric columns to standardise (one-hot columns stay 0/1); `missing_flags` the column that
        says a numeric field is absent (a categorical field is absent when all its columns are 0);
        `times` orders the field-selection split; `E`, frozen encoder embeddings, adds an embedding
        logit that competes like a field."""
        y = np.asarray(y).astype(int)
        self.classes_ = np.array([0, 1])
        if len(np.unique(y)) < 2:
            raise ValueError("the risk label needs both outcomes (0 and 1)")
        oof = np.zeros(len(y))
        oof_embed = np.zeros(len(y))
        coef, intercept = np.zeros(X_text.shape[1]), 0.0
        folds = []
        for tr, te, X_tr, X_te in (cv or sliced_splits(X_text))(y, self.folds):
            used = UsedColumns(X_tr)
            lr = LogisticRegression(C=self.C_text, solver="liblinear", dual=True, max_iter=2000,
                                    random_state=LIBLINEAR_SEED).fit(
                used.cut(X_tr), y[tr])
            oof[te] = lr.decision_function(used.cut(X_te))
            coef[used.columns] += lr.coef_[0]
            intercept = intercept + lr.intercept_
            folds.append((tr, te))
            if E is not None:
                oof_embed[te] = LogisticRegression(C=self.C_embed, max_iter=3000).fit(
                    E[tr], y[tr]).decision_function(E[te])
        coef, intercept = coef / len(folds), intercept / len(folds)
        # The text score served is the fold models' mean logit: its spread on new text matches the
        # out-of-fold logits the stack was fitted on (a model refitted on all rows is more extreme,
        # which made the stacked probabilities overconfident).
        self.weights_ = LinearWeights(coef, intercept)
        groups = dict(groups) if groups is not None else {f"x{j}": [j] for j in range(X_struct.shape[1])}
        scaled_set = set(range(X_struct.shape[1]) if scaled is None else scaled)
        self.embed_ = None
        if E is not None:
            self.embed_ = LogisticRegression(C=self.C_embed, max_iter=3000).fit(E, y)
            groups[EMBEDDING_FIELD] = [X_struct.shape[1]]
            scaled_set.add(X_struct.shape[1])
            X_struct = np.column_stack([X_struct, oof_embed])
        kept = self._select_fields(oof, X_struct, y, groups, scaled_set, times, folds)
        self.field_columns_ = {g: list(groups[g]) for g in kept}
        self.missing_flags_ = {g: int(c) for g, c in (missing_flags or {}).items() if g in kept}
        self.stacks_ = {key: Stack.fit(oof, X_struct, y, self._columns(key), scaled_set, self.C_stack)
                        for key in self._subsets(kept)}
        # Cross-fitted scores of the training rows (out-of-fold text logit, out-of-fold second stage):
        # each row scored as new text, for risk thresholds, calibration figures and the drift reference.
        # Kept only until the bundle is built.
        cross = np.zeros(len(y))
        for tr, te in folds:
            stacks = {key: Stack.fit(oof[tr], X_struct[tr], y[tr], self._columns(key), scaled_set, self.C_stack)
                      for key in self._subsets(kept)} if len(np.unique(y[tr])) == 2 else self.stacks_
            cross[te] = self._route(stacks, oof[te], X_struct[te])
        self.cross_fit_score_ = cross
        return self

    @property
    def kept_fields_(self) -> list[str]:
        return list(self.field_columns_)

    def _columns(self, key: tuple[str, ...]) -> list[int]:
        return sorted(j for g in key for j in self.field_columns_[g])

    @staticmethod
    def _subsets(kept: list[str]) -> list[tuple[str, ...]]:
        if len(kept) <= MAX_FIELDS_PER_SUBSET:
            return [tuple(sorted(c)) for r in range(len(kept) + 1) for c in combinations(kept, r)]
        return [tuple(sorted(kept)), ()] + [tuple(sorted(set(kept) - {g})) for g in kept]

    def present_fields(self, X_struct: np.ndarray) -> np.ndarray:
        """(rows, kept fields) booleans: does the row carry a value for the field?"""
        present = np.ones((X_struct.shape[0], len(self.field_columns_)), dtype=bool)
        for k, (g, cols) in enumerate(self.field_columns_.items()):
            if g in self.missing_flags_:
                present[:, k] = X_struct[:, self.missing_flags_[g]] == 0
            elif g != EMBEDDING_FIELD:
                present[:, k] = np.any(X_struct[:, cols] != 0, axis=1)
        return present

    def _route(self, stacks: dict[tuple[str, ...], Stack], text_logit: np.ndarray, X_struct: np.ndarray) -> np.ndarray:
        """Each row through the second stage of the largest field set it carries."""
        names = list(self.field_columns_)
        present = self.present_fields(X_struct)
        out = np.zeros(len(text_logit))
        patterns, which = np.unique(present, axis=0, return_inverse=True)
        for p, pattern in enumerate(patterns):
            have = {g for g, on in zip(names, pattern, strict=True) if on}
            key = max((k for k in stacks if set(k) <= have), key=len)
            rows = np.flatnonzero(np.ravel(which) == p)
            out[rows] = expit(stacks[key].logit(text_logit[rows], X_struct[rows]))
        return out

    def _select_fields(self, oof, X_struct, y, groups, scaled_set, times, folds) -> list[str]:
        n = len(y)
        if times is not None:
            order = np.argsort(times, kind="stable")
            splits = [(order[: int(n * 0.75)], order[int(n * 0.75):])]
            self.field_selection_: dict = {"split": "latest quarter by time"}
        else:
            splits = folds
            self.field_selection_ = {"split": "out-of-fold rows (the text model's folds)"}
        if not groups or any(len(np.unique(y[tr])) < 2 for tr, _ in splits) \
                or len(np.unique(y[np.concatenate([te for _, te in splits])])) < 2:
            self.field_selection_["kept"] = list(groups)
            return list(groups)

        def held_out_auc(fields: list[str]) -> float:
            cols = sorted(j for g in fields for j in groups[g])
            scores, truth = [], []
            for tr, te in splits:
                stack = Stack.fit(oof[tr], X_struct[tr], y[tr], cols, scaled_set, self.C_stack)
                scores.append(stack.logit(oof[te], X_struct[te]))
                truth.append(y[te])
            return float(roc_auc_score(np.concatenate(truth), np.concatenate(scores)))

        kept: list[str] = []
        best = held_out_auc(kept)
        trail = {"text only": round(best, 4)}
        while len(kept) < len(groups):
            score, field = max((held_out_auc([*kept, g]), g) for g in groups if g not in kept)
            trail[f"+ {field}"] = round(score, 4)
            if score < best + self.min_gain:
                break
            kept.append(field)
            best = score
        self.field_selection_.update({"kept": kept, "inner_roc_auc": trail})
        return kept

    def text_logit(self, X_text) -> np.ndarray:
        return self.weights_(sparse.csr_matrix(X_text))[:, 0]

    def stacked_score(self, text_logit: np.ndarray, X_struct: np.ndarray) -> np.ndarray:
        """`X_struct` here already carries the embedding logit as its last column (hybrid)."""
        return self._route(self.stacks_, text_logit, X_struct)

    def risk_score(self, X_text, X_struct: np.ndarray, E: np.ndarray | None = None) -> np.ndarray:
        """The dispute probability of each row."""
        if getattr(self, "embed_", None) is not None:
            if E is None:
                raise ValueError("this risk head was trained with encoder embeddings: pass E")
            X_struct = np.column_stack([X_struct, self.embed_.decision_function(E)])
        return self.stacked_score(self.text_logit(X_text), X_struct)

    def predict_proba(self, X_text, X_struct: np.ndarray, E: np.ndarray | None = None) -> np.ndarray:
        p = self.risk_score(X_text, X_struct, E)
        return np.column_stack([1 - p, p])

    def predict(self, X_text, X_struct: np.ndarray, E: np.ndarray | None = None) -> np.ndarray:
        return (self.risk_score(X_text, X_struct, E) >= 0.5).astype(int)

    def contributions(self, x_row: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Text features' push towards a dispute (the stack weight on the text logit is positive)."""
        sign = np.sign(self.stacks_[tuple(sorted(self.field_columns_))].coef[0] or 1.0)
        return x_row.indices, x_row.data * self.weights_.column_weights(x_row.indices, 0) * sign
