"""What counts as a local encoder checkpoint and its content fingerprint. Where the default one lives is
`models.settings` (XIAOBAO_ENCODER, default models/encoder_e5)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from models.errors import ModelLoadError
from models.settings import DEFAULT_ENCODER_DIR, ROOT

__all__ = ["DEFAULT_ENCODER_DIR", "ROOT", "EncoderError", "check_checkpoint", "fingerprint"]
DERIVED_DIR = "onnx"  # exported runtimes live beside the weights but are not part of the fingerprint
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "spiece.model",
                   "tokenizer.model")


class EncoderError(ModelLoadError, ValueError):
    """An encoder directory cannot be used; the message is one line that says why."""


def check_checkpoint(path: Path | str) -> dict[str, Any]:
    """The checkpoint's config.json, or EncoderError naming what is missing. Loads no weights."""
    folder = Path(path)
    hint = "a transformers checkpoint needs config.json, weights and tokenizer files"
    if not folder.is_dir():
        raise EncoderError(f"encoder directory {folder} does not exist"
                           + (" (build it with `make encoder`)" if folder == DEFAULT_ENCODER_DIR else ""))
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise EncoderError(f"{folder} is not an encoder checkpoint: no config.json ({hint})")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EncoderError(f"{config_path} is not readable JSON: {exc}") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise EncoderError(f"{config_path} has no model_type, so it is not a transformers config")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise EncoderError(f"{folder} is not an encoder checkpoint: no weights "
                           f"({' or '.join(WEIGHT_FILES[::2])})")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise EncoderError(f"{folder} is not an encoder checkpoint: no tokenizer files "
                           f"({', '.join(TOKENIZER_FILES[:3])}, ...)")
    return config


_FINGERPRINTS: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def fingerprint(path: Path | str) -> str:
    """sha256 over the checkpoint's top-level files (names and contents); derived runtimes excluded.

    Memoised per (path, names, sizes, mtimes) so that a process hashes a large checkpoint once.
    """
    folder = Path(path).resolve()
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    stat_key = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (str(folder), stat_key)
    if key not in _FINGERPRINTS:
        outer = hashlib.sha256()
        for p in files:
            inner = hashlib.sha256()
            with open(p, "rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                    inner.update(chunk)
            outer.update(f"{p.name}\0{inner.hexdigest()}\n".encode())
        _FINGERPRINTS[key] = outer.hexdigest()
    return _FINGERPRINTS[key]
