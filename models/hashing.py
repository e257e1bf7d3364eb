"""Hashes: the sha256 of a file, read in chunks (bundles, fine-tuned weights, ONNX exports, training data),
and the fingerprint of a text (which rows a version trained on)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def text_fingerprint(text: str) -> str:
    """16 hex digits of the text's sha256: enough to tell rows apart, without keeping the text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
