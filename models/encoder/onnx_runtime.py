"""ONNX Runtime variants of an encoder checkpoint: export, int8 dynamic quantisation, a quality gate.

The exported graph takes input_ids and attention_mask and returns the masked mean of the last hidden
state, so pooling runs inside ONNX Runtime too. Files go to <checkpoint>/onnx/ (or a cache folder when
the checkpoint is read-only) with a manifest naming the checkpoint fingerprint they were made from, the
sha256 of each file, and the int8 model's worst cosine against fp32 on the verification texts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from models.encoder.checkpoint import DERIVED_DIR, EncoderError
from models.hashing import sha256_file

MANIFEST = "manifest.json"
FP32_FILE, INT8_FILE = "model.onnx", "model_int8.onnx"
MIN_COSINE = 0.99


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def can_export() -> bool:
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return available()



def read_manifest(folder: Path, source_fingerprint: str) -> dict[str, Any] | None:
    """The manifest if it was made from this checkpoint, else None (stale or absent)."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if manifest.get("source_fingerprint") == source_fingerprint else None


def check_file(folder: Path, manifest: dict[str, Any], name: str) -> Path | None:
    """The exported file if present and unchanged since export."""
    path = folder / name
    want = manifest.get("files", {}).get(name)
    if not want or not path.is_file():
        return None
    if sha256_file(path) != want:
        raise EncoderError(f"{path} does not match its manifest (sha256 differs): delete {folder} to re-export")
    return path


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime.quantization logs advice through the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def export_fp32(model: Any, out: Path) -> None:
    """Trace `model` (a transformers encoder) with mean pooling into an ONNX file."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    ids = torch.ones(2, 16, dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "pooled": {0: "batch"}}
    # The exporter restores the wrapper's training flag on every submodule afterwards: a fresh wrapper
    # is in training mode and would leave `model` with dropout on, so both are put in eval mode.
    wrapper = Pooled(model).eval()
    try:
        with _quiet(), torch.inference_mode(False), torch.no_grad():
            # The TorchScript exporter needs neither onnxscript nor a dynamo trace of the HF model.
            torch.onnx.export(wrapper, (ids, torch.ones_like(ids)), str(out),
                              input_names=["input_ids", "attention_mask"], output_names=["pooled"],
                              dynamic_axes=axes, opset_version=17, dynamo=False)
    finally:
        model.eval()


def quantize_int8(src: Path, out: Path) -> None:
    """Dynamic int8: per-channel weights (per-tensor weights lose too much on e5's FFN outputs)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(str(src), str(out), per_channel=True, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No busy-waiting between runs: on 2 cores spinning threads starve the rest of the service.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def derived_dir(checkpoint: Path, source_fingerprint: str, cache_root: Path) -> Path:
    """<checkpoint>/onnx when writable, else a folder under the cache named by the fingerprint."""
    own = checkpoint / DERIVED_DIR
    if (own.is_dir() and os.access(own, os.W_OK)) or (not own.exists() and os.access(checkpoint, os.W_OK)):
        return own
    return cache_root / "onnx" / source_fingerprint[:32]


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)


def build(folder: Path, source_fingerprint: str, model: Any, keep_fp32: bool) -> dict[str, Any]:
    """Export fp32 (kept only if asked) and int8 into `folder`; returns the manifest without the gate."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(folder, source_fingerprint) or {"source_fingerprint": source_fingerprint,
                                                            "files": {}}
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        fp32 = folder / FP32_FILE if keep_fp32 else Path(tmp) / FP32_FILE
        if not (keep_fp32 and check_file(folder, manifest, FP32_FILE)):
            export_fp32(model, fp32)
        if keep_fp32:
            manifest["files"][FP32_FILE] = sha256_file(fp32)
        if not check_file(folder, manifest, INT8_FILE):
            tmp_int8 = Path(tmp) / INT8_FILE
            quantize_int8(fp32, tmp_int8)
            os.replace(tmp_int8, folder / INT8_FILE)
            manifest["files"][INT8_FILE] = sha256_file(folder / INT8_FILE)
            manifest.pop("int8_min_cosine", None)
    write_manifest(folder, manifest)
    return manifest
