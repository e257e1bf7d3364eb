"""The risk head: folds that hold out whole writer batches, and a request without a field scored by a
second stage that never relied on that field (not as if the field were 0)."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from scipy.special import expit

from models.features import StructuredEncoder
from models.heads import MAX_FIELDS_PER_SUBSET, RiskClassifier, batch_folds
from models.text import clean


# --- batch folds ------------------------------------------------------------------------------------
def labels_and_batches(n_batches: int, per_batch: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    batches = np.repeat([f"b{k}" for k in range(n_batches)], per_batch)
    rates = np.linspace(0.15, 0.6, n_batches)  # batches differ in how often their rows escalate
    y = (rng.random(len(batches)) < np.repeat(rates, per_batch)).astype(int)
    return y, batches


@pytest.mark.parametrize("n_batches,n_splits,expected_folds", [(3, 5, 3), (4, 5, 4), (8, 5, 5), (11, 3, 3)])
def test_no_batch_is_on_both_sides_of_a_fold(n_batches, n_splits, expected_folds):
    y, batches = labels_and_batches(n_batches)
    folds = list(batch_folds(y, n_splits, batches))
    assert len(folds) == expected_folds
    scored = np.concatenate([te for _, te in folds])
    assert sorted(scored) == list(range(len(y)))  # every row scored once
    for tr, te in folds:
        assert not set(batches[tr]) & set(batches[te])
        assert set(np.unique(y[tr])) == {0, 1}


def test_batch_folds_are_reproducible():
    y, batches = labels_and_batches(6)
    first = [te.tolist() for _, te in batch_folds(y, 5, batches, random_state=3)]
    again = [te.tolist() for _, te in batch_folds(y, 5, batches, random_state=3)]
    assert first == again


@pytest.mark.parametrize("given", ["none", "one batch", "two batches"])
def test_fewer_than_three_batches_fall_back_to_stratified_folds(given):
    y, batches = labels_and_batches(2)
    groups = {"none": None, "one batch": np.full(len(y), "b0"), "two batches": batches}[given]
    folds = list(batch_folds(y, 5, groups))
    assert len(folds) == 5
    for _, te in folds:  # each fold keeps the label mix of the whole
        assert abs(y[te].sum() - y.sum() / 5) <= 1
    if given == "two batches":  # the two batches are spread over the folds, not held out
        assert all(len(set(batches[te])) == 2 for _, te in folds)


# --- a risk head on synthetic requests --------------------------------------------------------------
def synthetic(n: int = 900, seed: int = 0):
    """Texts as sparse bags of words (words 0-4 signal a dispute); repeat_count and channel raise the risk."""
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 50, size=(n, 6))
    X = sparse.csr_matrix((np.ones(n * 6), (np.repeat(np.arange(n), 6), words.ravel())), shape=(n, 50))
    repeat = rng.poisson(1.0, n)
    channel = rng.choice(["电话客服", "手机银行", "监管转办"], n)
    logit = 0.8 * (words < 5).sum(axis=1) + 1.5 * np.log1p(repeat) + 2.0 * (channel == "监管转办") - 2.5
    y = (rng.random(n) < expit(logit)).astype(int)
    return X, pd.DataFrame({"repeat_count": repeat.astype(float), "channel": channel}), y


@pytest.fixture(scope="module")
def fitted():
    X, frame, y = synthetic()
    enc = StructuredEncoder(numeric=["repeat_count"], categorical=["channel"]).fit(frame)
    risk = RiskClassifier().fit(X, enc.transform(frame), y, groups=enc.groups_, scaled=enc.scaled_columns_,
                                missing_flags=enc.missing_flags_)
    return risk, enc, X


def score(fitted, rows: list[dict]) -> np.ndarray:
    risk, enc, X = fitted
    frame = pd.DataFrame(rows)
    return risk.risk_score(X[[0] * len(rows)], enc.transform(frame))


def stack_score(fitted, key: tuple[str, ...], rows: list[dict]) -> np.ndarray:
    risk, enc, X = fitted
    Xq = X[[0] * len(rows)]
    return expit(risk.stacks_[key].logit(risk.text_logit(Xq), enc.transform(pd.DataFrame(rows))))


def test_one_second_stage_per_subset_of_the_kept_fields(fitted):
    risk, _, _ = fitted
    assert set(risk.kept_fields_) == {"repeat_count", "channel"}
    assert set(risk.stacks_) == {(), ("channel",), ("repeat_count",), ("channel", "repeat_count")}
    assert len(risk.cross_fit_score_) == 900 and np.all((risk.cross_fit_score_ > 0) & (risk.cross_fit_score_ < 1))


def test_a_missing_repeat_count_is_not_a_zero(fitted):
    missing = [{"repeat_count": None, "channel": "电话客服"}, {"repeat_count": np.nan, "channel": "电话客服"},
               {"channel": "电话客服"}, {"repeat_count": "not a number", "channel": "电话客服"}]
    known = [{"repeat_count": 0, "channel": "电话客服"}, {"repeat_count": 5, "channel": "电话客服"}]
    m = score(fitted, missing)
    zero, five = score(fitted, known)
    assert np.allclose(m, m[0])  # None, NaN, no key, an unreadable value: all unknown
    assert zero < m[0] < five  # unknown sits between "never called before" and "called five times"
    assert m[0] - zero > 0.02
    assert m == pytest.approx(stack_score(fitted, ("channel",), missing), abs=1e-9)
    assert [zero, five] == pytest.approx(stack_score(fitted, ("channel", "repeat_count"), known), abs=1e-9)


def test_a_missing_channel_is_scored_without_channel(fitted):
    rows = [{"repeat_count": 2, "channel": None}, {"repeat_count": 2, "channel": ""}]
    s = score(fitted, rows)
    assert s == pytest.approx(stack_score(fitted, ("repeat_count",), rows), abs=1e-9)
    # A channel value training never saw is still a value (the <其他> column), scored by the full stack.
    unseen = [{"repeat_count": 2, "channel": "飞鸽传书"}]
    assert score(fitted, unseen) == pytest.approx(stack_score(fitted, ("channel", "repeat_count"), unseen), abs=1e-9)


def test_no_fields_at_all_is_the_text_only_stage(fitted):
    rows = [{"repeat_count": None, "channel": None}]
    assert score(fitted, rows) == pytest.approx(stack_score(fitted, (), rows), abs=1e-9)
    referred = score(fitted, [{"repeat_count": 3, "channel": "监管转办"}])
    assert referred > score(fitted, rows)


def test_each_row_of_a_batch_is_routed_by_its_own_fields(fitted):
    rows = [{"repeat_count": 0, "channel": "手机银行"}, {"repeat_count": None, "channel": "手机银行"},
            {"repeat_count": 4, "channel": None}, {"repeat_count": None, "channel": None}]
    together = score(fitted, rows)
    alone = np.concatenate([score(fitted, [r]) for r in rows])
    assert together == pytest.approx(alone, abs=1e-12)
    assert len(set(np.round(together, 6))) == 4


def test_many_fields_keep_only_the_full_and_leave_one_out_stages():
    rng = np.random.default_rng(1)
    n, names = 500, [f"f{k}" for k in range(MAX_FIELDS_PER_SUBSET + 1)]
    frame = pd.DataFrame({c: rng.poisson(1.0, n).astype(float) for c in names})
    X = sparse.csr_matrix(rng.integers(0, 2, size=(n, 20)).astype(float))
    y = (rng.random(n) < expit(frame.to_numpy().sum(axis=1) * 0.5 - 3)).astype(int)
    enc = StructuredEncoder(numeric=names).fit(frame)
    risk = RiskClassifier(min_gain=-1.0).fit(X, enc.transform(frame), y, groups=enc.groups_,
                                             scaled=enc.scaled_columns_, missing_flags=enc.missing_flags_)
    assert set(risk.kept_fields_) == set(names)
    full = tuple(sorted(names))
    assert set(risk.stacks_) == {full, ()} | {tuple(sorted(set(names) - {g})) for g in names}
    assert not set(risk.stacks_) & {tuple(sorted(c)) for c in combinations(names, 2)}
    # One field missing: its leave-one-out stage; two missing: no stage without both but the text-only one.
    q = pd.DataFrame([{**{c: 1.0 for c in names}, "f0": None}, {**{c: 1.0 for c in names}, "f0": None, "f1": None}])
    S = enc.transform(q)
    t = risk.text_logit(X[[0, 0]])
    got = risk.risk_score(X[[0, 0]], S)
    assert got[0] == pytest.approx(expit(risk.stacks_[tuple(sorted(set(names) - {"f0"}))].logit(t[:1], S[:1]))[0])
    assert got[1] == pytest.approx(expit(risk.stacks_[()].logit(t[1:], S[1:]))[0])


# --- the default model: a request without repeat_count ----------------------------------------------
def test_the_served_model_does_not_read_a_missing_repeat_count_as_zero(demo_bundle):
    risk = demo_bundle.heads["risk"]
    assert "repeat_count" in risk.kept_fields_  # the demo data makes it matter
    text = "信用卡被盗刷了两万块，打了好几次电话都没人处理，再不解决就去监管投诉"
    fields = [{"channel": "电话客服", "repeat_count": None, "amount": 20000},
              {"channel": "电话客服", "repeat_count": 0, "amount": 20000},
              {"channel": "电话客服", "amount": 20000}]
    missing, zero, absent = (p["risk"]["score"] for p in demo_bundle.predict([text] * 3, fields, explain=False))
    assert missing == absent and abs(missing - zero) >= 0.005
    X = demo_bundle.features([clean(text)])
    S = demo_bundle.structured_features(fields[:1], 1)
    key = tuple(sorted(set(risk.kept_fields_) - {"repeat_count"}))
    expected = expit(risk.stacks_[key].logit(risk.text_logit(X), S))[0]
    assert missing == pytest.approx(float(expected), abs=6e-5)  # the served score is rounded to 4 places


def test_the_served_model_with_no_fields_uses_the_text_only_stage(demo_bundle):
    risk = demo_bundle.heads["risk"]
    text = "信用卡年费乱收，要求退还"
    [p] = demo_bundle.predict([text], explain=False)
    X = demo_bundle.features([clean(text)])
    S = demo_bundle.structured_features(None, 1)
    assert p["risk"]["score"] == pytest.approx(float(expit(risk.stacks_[()].logit(risk.text_logit(X), S))[0]),
                                               abs=6e-5)
