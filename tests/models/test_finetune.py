"""The finetune backend on a tiny random BERT: training loop, masking, early stopping, determinism,
calibration, explanations and the stored weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from models.finetune import FineTunedModel, MultiTaskNet, freeze, phrases_from_tokens, pick_device
from training.common import FinetuneParams, TrainParams
from training.data import Columns, Dataset, load_dataset
from training.finetune import IGNORE, _Loss, build_targets, validation_split
from training.fit import fit_bundle

FAST = FinetuneParams(epochs=2, lr=2e-3, head_lr=5e-3, batch_size=16, max_length=64)


@pytest.fixture(scope="module")
def small_ds(small_demo) -> Dataset:
    return load_dataset(small_demo)


@pytest.fixture(scope="module")
def ft_bundle(small_ds, tiny_encoder):
    return fit_bundle(small_ds, TrainParams(backend="finetune", encoder=str(tiny_encoder), finetune=FAST))


def test_one_network_with_a_head_per_labelled_task(ft_bundle, small_ds):
    model = ft_bundle.finetuned
    assert isinstance(model.net, MultiTaskNet)
    assert set(model.net.heads) == {"category", "cause", "risk"} == set(ft_bundle.heads)
    assert model.net.heads["category"].out_features == len(ft_bundle.heads["category"].classes_)
    # the risk layer reads the pooled text and the structured fields
    assert model.net.heads["risk"].in_features == 32 + model.n_struct and model.n_struct > 0
    meta = ft_bundle.meta["finetune"]
    assert meta["device"] == str(pick_device()) and meta["epochs_run"] <= 2
    assert meta["validation_rows"] == round(len(small_ds) * 0.15)
    assert {"category", "cause", "risk"} <= set(meta["validation"])
    assert all(t > 0 for t in meta["temperatures"].values())


def test_prediction_has_the_shape_of_the_other_backends(ft_bundle, demo_bundle):
    texts = ["信用卡年费被重复扣了两次，客服一直推诿，我要投诉", "理财产品亏损了，销售时没说有风险"]
    fields = [{"channel": "电话客服", "repeat_count": 2, "amount": 300.0}, {}]
    ours, theirs = ft_bundle.predict(texts, fields), demo_bundle.predict(texts, fields)
    for a, b in zip(ours, theirs, strict=True):
        assert set(a) == set(b)
        for head in ("category", "cause"):
            assert set(a[head]) == set(b[head])
            assert len(a[head]["top_k"]) == 3
            assert abs(sum(t["probability"] for t in a[head]["top_k"]) - 1) < 1.0001
            assert a[head]["label"] in ft_bundle.heads[head].classes_
        assert set(a["risk"]) == set(b["risk"]) and 0 <= a["risk"]["score"] <= 1
        assert a["risk"]["level"] in ("高", "中", "低")
    assert ft_bundle.predict(texts, fields, explain=False)[0].get("category", {}).get("phrases") is None


def test_structured_fields_move_the_risk(ft_bundle):
    text = ["借记卡被冻结了，不能转账"]
    one = ft_bundle.predict(text, [{"channel": "电话客服", "repeat_count": 0}])[0]["risk"]["score"]
    many = ft_bundle.predict(text, [{"channel": "信访", "repeat_count": 6, "amount": 100000.0}])[0]["risk"]["score"]
    assert one != many


def test_explanations_are_phrases_of_the_text_without_pii(ft_bundle):
    text = "我的手机13912345678一直接到催收电话，信用卡分期手续费太高，要求退还"
    [p] = ft_bundle.predict([text])
    shown = str(p)
    assert "13912345678" not in shown and "1391" not in shown.replace("139****5678", "")
    from models.text import clean

    cleaned = clean(text)
    for head in ("category", "cause", "risk"):
        phrases = p[head]["phrases"]
        assert phrases, head
        for ph in phrases:
            assert ph["phrase"] in cleaned and len(ph["phrase"]) >= 2 and ph["weight"] > 0
            assert "*" not in ph["phrase"]


def test_phrases_merge_pieces_and_adjacent_positive_words():
    text = "信用卡被盗刷了，要求退款"
    units = [(0, 3, "word"), (3, 4, "glue"), (4, 6, "word"), (6, 7, "glue"), (7, 8, "break"), (8, 10, "word"),
             (10, 12, "word")]
    # tokens as a sentencepiece model might cut them (offsets into "passage: " + text)
    prefix = len("passage: ")
    spans = [(0, 0), (0, 7), (prefix, prefix + 2), (prefix + 2, prefix + 3), (prefix + 3, prefix + 4),
             (prefix + 4, prefix + 5), (prefix + 5, prefix + 6), (prefix + 6, prefix + 7), (prefix + 7, prefix + 8),
             (prefix + 8, prefix + 10), (prefix + 10, prefix + 12), (0, 0)]
    scores = np.array([0, 9.0, 0.5, 0.5, 0.1, 1.0, 1.0, 0.0, 0.0, -0.5, 0.8, 0])
    out = phrases_from_tokens(text, units, scores, spans, prefix, n=5)
    assert out[0]["phrase"] == "信用卡被盗刷"  # 信用 + 卡 merged, 被 (glue) joins it to 盗刷
    assert [o["phrase"] for o in out] == ["信用卡被盗刷", "退款"]  # 要求 is negative; the prefix never shows
    assert abs(out[0]["weight"] - 3.1 / 4.4) < 1e-3


def test_masked_losses_ignore_rows_without_a_label():
    frame = pd.DataFrame({"text": ["a", "b", "c", "d"], "category": ["x", None, "y", "x"],
                          "cause": ["p", "q", None, "p"], "risk": [1, 0, None, 0]})
    ds = Dataset(frame, "t", ["category", "cause", "risk"], [])
    t = build_targets(ds)
    assert t.single["category"].tolist() == [0, IGNORE, 1, 0]
    assert np.isnan(t.risk[2])
    loss = _Loss(t, torch.device("cpu"), None, np.arange(4))
    rows = np.array([1, 2])
    out = {"category": torch.zeros(2, 2, requires_grad=True), "cause": torch.zeros(2, 2), "risk": torch.zeros(2)}
    total, parts = loss(out, rows)
    # row 1 has no category, row 2 no cause and no risk: one labelled row per head
    assert parts == pytest.approx({"category": np.log(2), "cause": np.log(2), "risk": np.log(2)})
    out2 = {"category": torch.tensor([[50.0, -50.0], [0.0, 0.0]]), "cause": torch.tensor([[0.0, 0.0], [9.0, -9.0]]),
            "risk": torch.tensor([0.0, 7.0])}
    assert loss(out2, rows)[0].item() == pytest.approx(total.item())  # unlabelled rows' outputs do not count


def test_validation_split_is_stratified(small_ds):
    tr, va = validation_split(small_ds, 0.15, 0)
    assert len(set(tr) & set(va)) == 0 and len(tr) + len(va) == len(small_ds)
    all_share = small_ds.frame["category"].value_counts(normalize=True)
    va_share = small_ds.frame["category"].iloc[va].value_counts(normalize=True)
    assert (va_share - all_share).abs().max() < 0.08


def test_same_seed_same_model(small_ds, tiny_encoder, ft_bundle):
    again = fit_bundle(small_ds, TrainParams(backend="finetune", encoder=str(tiny_encoder), finetune=FAST))
    texts = small_ds.texts[:8]
    S = ft_bundle.structured_features(small_ds.frame[small_ds.features].iloc[:8], 8)
    a, b = ft_bundle.finetuned.logits(texts, S)[0], again.finetuned.logits(texts, S)[0]
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5)


def test_early_stopping_keeps_the_best_epoch(small_ds, tiny_encoder, monkeypatch):
    import training.finetune as ft

    real = ft._evaluate
    losses = iter([1.0, 0.5, 0.9, 0.8, 0.7])

    def scripted(*args, **kwargs):
        loss, logits = real(*args, **kwargs)
        return next(losses, loss), logits

    monkeypatch.setattr(ft, "_evaluate", scripted)
    params = FinetuneParams(epochs=5, patience=1, lr=1e-3, max_length=32)
    bundle = fit_bundle(small_ds, TrainParams(backend="finetune", encoder=str(tiny_encoder), finetune=params))
    meta = bundle.meta["finetune"]
    assert meta["epochs_run"] == 3 and meta["best_epoch"] == 2  # 0.9 after 0.5: stop, keep epoch 2


def test_max_steps_budget(small_ds, tiny_encoder):
    params = FinetuneParams(epochs=3, max_steps=3, max_length=32)
    meta = fit_bundle(small_ds, TrainParams(backend="finetune", encoder=str(tiny_encoder),
                                            finetune=params)).meta["finetune"]
    assert meta["steps"] == 3 and meta["epochs_run"] == 1


def test_word_embeddings_are_frozen_and_not_stored(ft_bundle, tiny_encoder, tmp_path):
    from safetensors.torch import load_file

    model: FineTunedModel = ft_bundle.finetuned
    saved = ft_bundle.save_weight_files(tmp_path)
    state = load_file(str(tmp_path / model.weights_file))
    assert set(saved) == {model.weights_file} and set(state) == set(model.trainable)
    assert "backbone.embeddings.word_embeddings.weight" not in state
    assert not any(k.startswith("backbone.pooler.") for k in state)
    assert any(k.startswith("heads.risk") for k in state) and any("encoder.layer.1" in k for k in state)
    base = MultiTaskNet(model.new_net().backbone, model.tasks, model.n_struct)
    freeze(base)
    np.testing.assert_array_equal(base.word_embeddings().weight.detach().numpy(),
                                  model.net.word_embeddings().weight.detach().cpu().numpy())


def test_device_choice():
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            pick_device("cuda")


def test_multilabel_category(tmp_path, tiny_encoder):
    rng = np.random.default_rng(0)
    words = {"A": "发动机异响", "B": "变速器顿挫", "C": "刹车失灵"}
    rows = []
    for _ in range(80):
        labels = sorted(rng.choice(list(words), size=rng.integers(1, 3), replace=False))
        rows.append({"desc": "，".join(words[k] for k in labels) + "，请尽快处理", "letters": ",".join(labels)})
    path = tmp_path / "ml.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    ds = load_dataset(path, Columns(text=("desc",), category="letters", cause=None, risk=None, features=(),
                                    multilabel_sep=","))
    bundle = fit_bundle(ds, TrainParams(backend="finetune", encoder=str(tiny_encoder),
                                        finetune=FinetuneParams(epochs=3, lr=3e-3, head_lr=1e-2, max_length=32)))
    assert bundle.heads["category"].multilabel and "risk" not in bundle.heads
    [p] = bundle.predict(["发动机异响，请尽快处理"])
    assert set(p["category"]["labels"]) <= set("ABC") and p["category"]["labels"]


def test_concurrent_requests_get_the_same_answers(ft_bundle):
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"信用卡第{i}次被盗刷，要求退款并赔偿" for i in range(6)]
    alone = [ft_bundle.predict([t])[0] for t in texts]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda t: ft_bundle.predict([t])[0], texts * 3))
    for i, p in enumerate(together):
        assert p["category"] == alone[i % 6]["category"] and p["risk"] == alone[i % 6]["risk"]
