"""`Encoder`: sentence embeddings from any local transformers checkpoint, cached on disk.

    enc = Encoder("models/encoder_e5")            # or a bank's own bert-base-chinese directory
    X = enc.encode(texts, batch_size=32)          # (n, dim) float32, L2-normalised mean pooling

Runtimes (`variant`): "fp32" and "int8" run the model in torch (int8: dynamic quantisation of the
linear layers), "onnx" and "onnx-int8" in ONNX Runtime. "auto" (the default) takes "onnx-int8" when ONNX
Runtime is installed and the int8 model's embeddings keep cosine >= 0.99 with fp32 on the verification
texts, else "onnx", else "fp32": onnx-int8 measured fastest on 2 cores (bench/encoder.py).

Pickling stores the directory and its fingerprint, never the weights; unpickling finds the same
checkpoint again (at its old path, else in the encoder folder of the model settings in scope:
`models.settings`, XIAOBAO_ENCODER, default models/encoder_e5) or fails with one line. Without a path
or cache folder, an Encoder takes those of the settings in scope (`models.settings:current`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models import settings as model_settings
from models.encoder import onnx_runtime
from models.encoder.cache import EmbeddingCache, text_key
from models.encoder.checkpoint import EncoderError, check_checkpoint, fingerprint
from models.encoder.convert import E5_PREFIX, MARKER_FILE
from models.encoder.verify_texts import verification_texts

VARIANTS = ("auto", "fp32", "int8", "onnx", "onnx-int8")
POOLING = "mean-l2"
CACHE_CHUNK = 1024


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def _looks_e5(path: Path, config: dict[str, Any]) -> bool:
    names = f"{path.name} {config.get('_name_or_path', '')}".lower()
    return any(tok == "e5" or tok.startswith("e5") for tok in names.replace("/", "-").replace("_", "-")
               .replace(" ", "-").split("-"))


class Encoder:
    """Frozen sentence encoder over a local checkpoint directory; see the module docstring."""

    def __init__(self, path: Path | str | None = None, *, variant: str = "auto", prefix: str | None = None,
                 max_length: int = 512, cache: bool = True, cache_dir: Path | str | None = None,
                 threads: int | None = None, expected_sha256: str | None = None) -> None:
        if variant not in VARIANTS:
            raise EncoderError(f"unknown encoder variant {variant!r} (one of {', '.join(VARIANTS)})")
        self.path = Path(path if path is not None else model_settings.current().encoder).absolute()
        self.config = check_checkpoint(self.path)
        if expected_sha256 and fingerprint(self.path) != expected_sha256:
            raise EncoderError(f"encoder {self.path} has changed: its sha256 is {fingerprint(self.path)[:12]}…, "
                               f"expected {expected_sha256[:12]}…")
        marker_path = self.path / MARKER_FILE
        self.marker: dict[str, Any] = (json.loads(marker_path.read_text(encoding="utf-8"))
                                       if marker_path.is_file() else {})
        self._prefix_arg = prefix
        if prefix is None:
            prefix = self.marker.get("prefix", E5_PREFIX if _looks_e5(self.path, self.config) else "")
        self.prefix: str = prefix
        limit = int(self.config.get("max_position_embeddings") or max_length)
        self.max_length = min(int(max_length), limit)
        self.dim = int(self.config.get("hidden_size") or self.config.get("d_model") or 0)
        self.requested_variant = variant
        self.use_cache = cache
        self._cache_dir_arg = cache_dir
        self.cache_dir = Path(cache_dir) if cache_dir is not None else model_settings.current().cache
        self.threads = int(threads) if threads else _cpus()
        self._variant: str | None = None
        self._id: str | None = None
        self._tokenizer: Any = None
        self._torch_model: Any = None
        self._runner: Any = None
        self._cache: EmbeddingCache | None = None
        self._onnx_dir: Path | None = None
        self._lock = threading.RLock()  # lazy loading happens once even under concurrent requests

    # -- identity ---------------------------------------------------------------------------------------
    @property
    def sha256(self) -> str:
        """Fingerprint of the checkpoint files (what bundles record)."""
        return fingerprint(self.path)

    @property
    def variant(self) -> str:
        """The runtime actually used ("auto" resolved; may export the ONNX model the first time)."""
        with self._lock:
            if self._variant is None:
                self._variant = self._resolve_variant()
            return self._variant

    @property
    def id(self) -> str:
        """Names the embedding function: checkpoint, runtime, prefix, length limit and pooling."""
        if self._id is None:  # fixed for the instance's life: hashing is not redone per request
            spec = f"{self.sha256}|{self.variant}|{self.prefix}|{self.max_length}|{POOLING}"
            self._id = hashlib.sha256(spec.encode()).hexdigest()
        return self._id

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "variant": self.variant, "prefix": self.prefix,
                "max_length": self.max_length, "dim": self.dim, "pooling": POOLING,
                "name": self.marker.get("name", self.path.name)}

    def __repr__(self) -> str:
        return f"Encoder({str(self.path)!r}, variant={self._variant or self.requested_variant!r})"

    # -- pickling by reference --------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "variant": self.requested_variant,
                "prefix": self._prefix_arg, "max_length": self.max_length, "cache": self.use_cache,
                "cache_dir": None if self._cache_dir_arg is None else str(self._cache_dir_arg),
                "threads": self.threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        path = _find_checkpoint(Path(state["path"]), state["sha256"], model_settings.current().encoder)
        self.__init__(path, variant=state["variant"], prefix=state["prefix"],  # type: ignore[misc]
                      max_length=state["max_length"], cache=state["cache"], cache_dir=state["cache_dir"],
                      threads=state["threads"], expected_sha256=state["sha256"])

    # -- encoding ---------------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised; cached texts are not re-encoded."""
        texts = [str(t) for t in texts]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        if not self.use_cache:
            unique = list(dict.fromkeys(texts))
            vecs = dict(zip(unique, self._encode_uncached(unique, batch_size), strict=True))
            return np.stack([vecs[t] for t in texts]).astype(np.float32, copy=False)
        cache = self._get_cache()
        encoder_id = self.id
        keys = [text_key(encoder_id, t) for t in texts]
        found = cache.get(list(dict.fromkeys(keys)))
        todo = list(dict.fromkeys(t for t, k in zip(texts, keys, strict=True) if k not in found))
        # Stored chunk by chunk, so an interrupted run over a large corpus keeps what it has done.
        for start in range(0, len(todo), CACHE_CHUNK):
            chunk = todo[start:start + CACHE_CHUNK]
            new = self._encode_uncached(chunk, batch_size)
            new_keys = [text_key(encoder_id, t) for t in chunk]
            cache.put(zip(new_keys, new, strict=True))
            found.update(zip(new_keys, new, strict=True))
        for i, k in enumerate(keys):
            out[i] = found[k]
        return out

    def _encode_uncached(self, texts: list[str], batch_size: int) -> np.ndarray:
        """The model call: tokenise once, run length-sorted batches padded to their own longest text."""
        tok = self._get_tokenizer()
        run = self._get_runner()
        ids = tok([self.prefix + t for t in texts], truncation=True, max_length=self.max_length,
                  add_special_tokens=True)["input_ids"]
        lengths = np.array([len(x) for x in ids])
        order = np.argsort(lengths, kind="stable")
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batch_size = max(1, int(batch_size))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = int(lengths[rows].max())
            input_ids = np.full((len(rows), width), pad, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                input_ids[r, :lengths[i]] = ids[i]
                mask[r, :lengths[i]] = 1
            out[rows] = run(input_ids, mask)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    # -- lazy parts -------------------------------------------------------------------------------------
    def _get_cache(self) -> EmbeddingCache:
        with self._lock:
            if self._cache is None:
                self._cache = EmbeddingCache(self.cache_dir, self.id, self.dim)
            return self._cache

    def _get_tokenizer(self) -> Any:
        with self._lock:
            return self._load_tokenizer()

    def _load_tokenizer(self) -> Any:
        if self._tokenizer is None:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # worker processes fork after use
            from transformers import AutoTokenizer

            try:
                with _quiet_transformers():
                    self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            except Exception as exc:
                raise EncoderError(f"cannot load the tokenizer of {self.path}: "
                                   f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
        return self._tokenizer

    def torch_model(self) -> Any:
        """The fp32 transformers model (loaded once)."""
        with self._lock:
            return self._load_torch_model()

    def _load_torch_model(self) -> Any:
        if self._torch_model is None:
            import torch
            from transformers import AutoModel

            try:
                with _quiet_transformers():
                    model = AutoModel.from_pretrained(str(self.path), local_files_only=True, dtype=torch.float32)
            except Exception as exc:
                raise EncoderError(f"cannot load the model in {self.path}: "
                                   f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
            self._torch_model = model.eval()
        return self._torch_model

    def _get_runner(self) -> Any:
        with self._lock:
            if self._runner is None:
                variant = self.variant
                if variant in ("fp32", "int8"):
                    self._runner = self._torch_runner(quantised=variant == "int8")
                else:
                    self._runner = self._onnx_runner(int8=variant == "onnx-int8")
            return self._runner

    def _torch_runner(self, quantised: bool) -> Any:
        import torch

        torch.set_num_threads(self.threads)
        model = self.torch_model()
        if quantised:
            model = quantize_torch_int8(model)

        def run(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                ids_t, mask_t = torch.from_numpy(input_ids), torch.from_numpy(mask)
                hidden = model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
                m = mask_t.unsqueeze(-1).to(hidden.dtype)
                return ((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)).numpy()

        return run

    def _onnx_runner(self, int8: bool) -> Any:
        folder = self._onnx_folder()
        manifest = onnx_runtime.read_manifest(folder, self.sha256)
        name = onnx_runtime.INT8_FILE if int8 else onnx_runtime.FP32_FILE
        path = onnx_runtime.check_file(folder, manifest, name) if manifest else None
        if path is None:
            self.prepare_onnx(keep_fp32=not int8)
            path = folder / name
        sess = onnx_runtime.session(path, self.threads)

        def run(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            return sess.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]

        return run

    def _onnx_folder(self) -> Path:
        if self._onnx_dir is None:
            self._onnx_dir = onnx_runtime.derived_dir(self.path, self.sha256, self.cache_dir)
        return self._onnx_dir

    def prepare_onnx(self, keep_fp32: bool = False) -> dict[str, Any]:
        """Export the ONNX model(s) if absent and gate int8 on quality; returns the manifest."""
        if not onnx_runtime.can_export():
            raise EncoderError("exporting to ONNX needs the onnx and onnxruntime packages")
        folder = self._onnx_folder()
        manifest = onnx_runtime.build(folder, self.sha256, self.torch_model(), keep_fp32=keep_fp32)
        if "int8_min_cosine" not in manifest:
            manifest["int8_min_cosine"] = self._int8_quality(folder / onnx_runtime.INT8_FILE)
            onnx_runtime.write_manifest(folder, manifest)
        return manifest

    def _int8_quality(self, int8_path: Path) -> float:
        """Worst cosine of onnx-int8 against torch fp32 over the verification texts."""
        texts = verification_texts(64)
        fp32 = self._with_runner(self._torch_runner(quantised=False), texts)
        sess = onnx_runtime.session(int8_path, self.threads)
        q = self._with_runner(lambda i, m: sess.run(None, {"input_ids": i, "attention_mask": m})[0], texts)
        return round(float((fp32 * q).sum(1).min()), 5)

    def _with_runner(self, runner: Any, texts: list[str]) -> np.ndarray:
        saved, self._runner = self._runner, runner
        try:
            return self._encode_uncached(texts, 16)
        finally:
            self._runner = saved

    def _resolve_variant(self) -> str:
        if self.requested_variant != "auto":
            if self.requested_variant.startswith("onnx") and not onnx_runtime.available():
                raise EncoderError(f"variant {self.requested_variant} needs onnxruntime (pip install onnxruntime)")
            return self.requested_variant
        if not onnx_runtime.available():
            return "fp32"
        manifest = onnx_runtime.read_manifest(self._onnx_folder(), self.sha256)
        if manifest is None or "int8_min_cosine" not in manifest:
            if not onnx_runtime.can_export():
                return "fp32"
            manifest = self.prepare_onnx()
        return "onnx-int8" if manifest["int8_min_cosine"] >= onnx_runtime.MIN_COSINE else "onnx"


def quantize_torch_int8(model: Any) -> Any:
    """torch dynamic int8 with per-channel weights; FFN output projections stay fp32 because their
    inputs (GELU outputs with outlier channels) lose too much under per-tensor activation scales."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {name: per_channel_dynamic_qconfig for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) and "pooler" not in name
            and not (name.endswith("output.dense") and "attention" not in name)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        return quantize_dynamic(model, spec, dtype=torch.qint8)


def _find_checkpoint(stored: Path, sha: str, fallback: Path) -> Path:
    """The stored path if its content is unchanged, else `fallback` (the settings' encoder folder)."""
    candidates = [stored, fallback]
    for path in dict.fromkeys(candidates):
        if path.is_dir() and (path / "config.json").is_file():
            with contextlib.suppress(OSError):
                if fingerprint(path) == sha:
                    return path
    raise EncoderError(f"the encoder this model was trained with ({stored}, sha256 {sha[:12]}…) is not here: "
                       "put that checkpoint back or point XIAOBAO_ENCODER at a copy of it")
