"""The `finetune` backend's model: one encoder fine-tuned for every head, and how it predicts.

`MultiTaskNet` is the encoder, mean pooling and one linear head per task (category, cause, risk); the
risk head also sees the standardised structured fields beside the pooled text. `FineTunedModel`
wraps it for the bundle: the base checkpoint is referenced by path + sha256 (an `Encoder`, pickled
by reference) and only the weights that fine-tuning changed are stored, in a safetensors file beside
bundle.joblib (the frozen word-embedding matrix, most of the model, comes from the base checkpoint).
Explanations come from the model itself: gradient × input over the tokens, for the predicted class,
mapped onto the text's words and merged into phrases.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize_scalar
from scipy.special import expit, softmax
from torch import nn

from models.explain import phrases_from_tokens, word_units_fn
from models.hashing import sha256_file
from models.registry import ModelLoadError

WEIGHTS_FILE = "finetune.safetensors"
TEXT_TASKS = ("category", "cause")
PREDICT_BATCH = 32


def pick_device(preference: str = "auto") -> torch.device:
    """cuda when present (or asked for), else cpu."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {preference!r} asked for, but torch sees no CUDA device")
    return torch.device(preference)


@dataclass
class TaskHead:
    """A fine-tuned head as the bundle lists it: its classes and calibration (the weights are in the net)."""

    name: str
    classes_: np.ndarray
    temperature_: float = 1.0
    multilabel: bool = False
    threshold: float = 0.5  # multi-label: a label is predicted at or above this probability


class MultiTaskNet(nn.Module):
    """Encoder → masked mean pooling → dropout → one linear layer per task.

    `tasks` maps a head to its number of outputs (risk: 1, a logit). The risk layer reads the pooled
    text with the `n_struct` structured features appended, so channel or repeat count can move it.
    """

    def __init__(self, backbone: nn.Module, tasks: Mapping[str, int], n_struct: int = 0, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        hidden = int(backbone.config.hidden_size)
        self.n_struct = n_struct
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({
            name: nn.Linear(hidden + (n_struct if name == "risk" else 0), k) for name, k in tasks.items()})

    def word_embeddings(self) -> nn.Embedding:
        return self.backbone.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
                struct: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        hidden = self.backbone(input_ids=None if inputs_embeds is not None else input_ids,
                               inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = self.dropout((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9))
        out = {}
        for name, layer in self.heads.items():
            if name == "risk":
                s = struct if struct is not None and self.n_struct else pooled.new_zeros((pooled.shape[0], self.n_struct))
                out[name] = layer(torch.cat([pooled, s.to(pooled.dtype)], dim=1)).squeeze(-1)
            else:
                out[name] = layer(pooled)
        return out


def freeze(net: MultiTaskNet, freeze_embeddings: bool = True) -> list[str]:
    """Freeze what fine-tuning leaves alone; returns the names of the trainable parameters (what is stored).

    The word-embedding matrix (96M of e5-small's 118M parameters) stays as in the base checkpoint, so
    versions store ~21M parameters; an unused pooler is frozen too, so its random weights are not stored.
    """
    embedding = net.word_embeddings().weight
    for name, p in net.named_parameters():
        p.requires_grad = not ((freeze_embeddings and p is embedding) or name.startswith("backbone.pooler."))
    return [name for name, p in net.named_parameters() if p.requires_grad]


def load_backbone(path: Path | str) -> nn.Module:
    """A fresh fp32 copy of the base encoder (never the `Encoder`'s own runtime, which others share)."""
    from transformers import AutoModel

    from models.encoder.encoder import _quiet_transformers

    with _quiet_transformers():
        return AutoModel.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)


def fit_binary_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature t minimising the log-loss of sigmoid(t · logit) (binary or multi-label)."""
    z, y = np.asarray(logits, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if len(z) == 0 or len(np.unique(y)) < 2:
        return 1.0

    def nll(log_t: float) -> float:
        s = z * np.exp(log_t)
        return float(np.mean(np.logaddexp(0, s) - y * s))
    return float(np.exp(minimize_scalar(nll, bounds=(-5, 5), method="bounded").x))


class FineTunedModel:
    """The fine-tuned network of a bundle; see the module docstring. Thread-safe for prediction."""

    def __init__(self, base: Any, tasks: Mapping[str, int], *, n_struct: int = 0, struct_mean: np.ndarray | None = None,
                 struct_scale: np.ndarray | None = None, max_length: int = 128, freeze_embeddings: bool = True,
                 dropout: float = 0.1, device: str = "auto", multilabel: Sequence[str] = ()) -> None:
        self.base = base  # models.encoder.Encoder (fp32, no cache): path, sha256, prefix
        self.tasks = dict(tasks)
        self.multilabel = tuple(multilabel)  # heads trained with one sigmoid per label
        self.n_struct = int(n_struct)
        self.struct_mean = np.zeros(n_struct, np.float32) if struct_mean is None else np.asarray(struct_mean, np.float32)
        self.struct_scale = np.ones(n_struct, np.float32) if struct_scale is None else np.asarray(struct_scale, np.float32)
        self.max_length = int(max_length)
        self.freeze_embeddings = freeze_embeddings
        self.dropout = dropout
        self.device = device
        self.weights_file = WEIGHTS_FILE
        self.weights_sha256: str | None = None
        self.trainable: list[str] = []
        self._net: MultiTaskNet | None = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    # -- building and storing ---------------------------------------------------------------------------
    def new_net(self) -> MultiTaskNet:
        """The base encoder with freshly initialised heads (training starts here)."""
        net = MultiTaskNet(load_backbone(self.base.path), self.tasks, self.n_struct, self.dropout)
        self.trainable = freeze(net, self.freeze_embeddings)
        return net

    def attach(self, net: MultiTaskNet) -> None:
        """Use `net` (trained) for prediction: evaluation mode, no parameter gradients."""
        net.eval()
        for p in net.parameters():
            p.requires_grad = False
        self._net = net.to(pick_device(self.device))

    @property
    def net(self) -> MultiTaskNet:
        if self._net is None:
            raise ModelLoadError("the fine-tuned weights are not loaded (load the version through the registry)")
        return self._net

    def files(self) -> list[str]:
        return [self.weights_file]

    def save_weights(self, folder: Path) -> dict[str, str]:
        """Write the trained parameters (those `freeze` left trainable) to folder/WEIGHTS_FILE."""
        from safetensors.torch import save_file

        params = dict(self.net.named_parameters())
        state = {name: params[name].detach().to("cpu", torch.float32).contiguous() for name in self.trainable}
        path = Path(folder) / self.weights_file
        save_file(state, str(path), metadata={"format": "pt", "base_sha256": self.base.sha256})
        self.weights_sha256 = sha256_file(path)
        return {self.weights_file: self.weights_sha256}

    def load_weights(self, folder: Path) -> None:
        """Rebuild the network from the base checkpoint and the stored weights; ModelLoadError if they
        do not fit together."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(folder) / self.weights_file
        if not path.is_file():
            raise ModelLoadError(f"{path}: the fine-tuned weights are missing")
        if self.weights_sha256 and sha256_file(path) != self.weights_sha256:
            raise ModelLoadError(f"{path}: sha256 does not match the bundle; the fine-tuned weights are corrupt")
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: cannot be read ({type(exc).__name__})") from None
        net = MultiTaskNet(load_backbone(self.base.path), self.tasks, self.n_struct, self.dropout)
        expected = set(freeze(net, self.freeze_embeddings))
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ModelLoadError(f"{path}: does not fit the network ({len(missing)} parameters missing, "
                                 f"{len(extra)} unexpected, e.g. {(missing or extra)[0]})")
        params = dict(net.named_parameters())
        for name, tensor in state.items():
            if tuple(tensor.shape) != tuple(params[name].shape):
                raise ModelLoadError(f"{path}: {name} has shape {tuple(tensor.shape)}, the network "
                                     f"{tuple(params[name].shape)}; trained on another base encoder?")
        net.load_state_dict(state, strict=False)
        self.attach(net)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_net", "_tokenizer", "_lock"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._net, self._tokenizer, self._lock = None, None, threading.Lock()

    # -- tokens -----------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = _tokenizer(str(self.base.path), self.base.sha256)
        return self._tokenizer

    def tokenize(self, texts: Sequence[str], offsets: bool = False) -> dict[str, Any]:
        """Token ids (with the encoder's prefix, e.g. e5's 'passage: '), truncated to max_length."""
        tok = self.tokenizer
        # A fast tokenizer sets its truncation on the shared Rust object per call: concurrent calls from
        # request threads can collide ("Already borrowed"), so they take turns.
        with _TOKENIZER_LOCK:
            return tok([self.base.prefix + t for t in texts], truncation=True,
                       max_length=min(self.max_length, self.base.max_length), return_offsets_mapping=offsets)

    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)

    def scale_struct(self, S: np.ndarray | None, n: int) -> np.ndarray:
        if not self.n_struct:
            return np.zeros((n, 0), dtype=np.float32)
        if S is None:
            raise ValueError("this model's risk head reads structured fields: pass their features (S)")
        return ((np.asarray(S, dtype=np.float32) - self.struct_mean) / self.struct_scale).astype(np.float32)

    # -- prediction -------------------------------------------------------------------------------------
    def logits(self, texts: Sequence[str], S: np.ndarray | None = None, explain: bool = False
               ) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]] | None, list[list[tuple[int, int]]]]:
        """Raw logits per task for already-cleaned texts; with `explain`, also each row's token
        attributions per task (gradient × input for the predicted class) and token character spans."""
        enc = self.tokenize(texts, offsets=True)
        ids, spans = enc["input_ids"], enc["offset_mapping"]
        S = self.scale_struct(S, len(ids))
        net, pad = self.net, self.pad_id()
        device = next(net.parameters()).device
        out = {name: np.zeros((len(ids), k) if name != "risk" else len(ids), dtype=np.float64)
               for name, k in self.tasks.items()}
        attributions: list[dict[str, np.ndarray]] | None = [{} for _ in ids] if explain else None
        order = np.argsort([len(x) for x in ids], kind="stable")  # length-sorted batches pad little
        with self._lock:
            for start in range(0, len(order), PREDICT_BATCH):
                rows = order[start:start + PREDICT_BATCH]
                input_ids, mask = _pad([ids[i] for i in rows], pad, device)
                struct = torch.from_numpy(S[rows]).to(device)
                if not explain:
                    with torch.inference_mode():
                        result = net(input_ids, mask, struct)
                    for name, z in result.items():
                        out[name][rows] = z.double().cpu().numpy()
                    continue
                embeds = net.word_embeddings()(input_ids).detach().requires_grad_(True)
                with torch.enable_grad():
                    result = net(None, mask, struct, inputs_embeds=embeds)
                    names = list(result)
                    for t, name in enumerate(names):
                        z = result[name]
                        if name == "risk":
                            target = z
                        elif self.tasks[name] > 1 and not self.is_multilabel(name):
                            target = torch.log_softmax(z, dim=1).gather(1, z.argmax(1, keepdim=True)).squeeze(1)
                        else:
                            target = z.gather(1, z.argmax(1, keepdim=True)).squeeze(1)
                        grad = torch.autograd.grad(target.sum(), embeds, retain_graph=t < len(names) - 1)[0]
                        scores = ((grad * embeds).sum(-1) * mask).detach().cpu().numpy()
                        for r, i in enumerate(rows):
                            attributions[i][name] = scores[r, :len(ids[i])]
                        out[name][rows] = z.detach().double().cpu().numpy()
        return out, attributions, spans

    def is_multilabel(self, name: str) -> bool:
        return name in self.multilabel

    def predict(self, bundle: Any, texts: list[str], fields: pd.DataFrame | Sequence[Mapping] | None,
                explain: bool) -> list[dict[str, Any]]:
        """The bundle's predictions (same shape as the other backends) for cleaned texts."""
        n = len(texts)
        S = bundle.structured_features(fields, n) if self.n_struct else None
        logits, attributions, spans = self.logits(texts, S, explain)
        out: list[dict[str, Any]] = [{"model_version": bundle.version} for _ in range(n)]
        reasons: list[list[str]] = [[] for _ in range(n)]
        for name in TEXT_TASKS:
            head = bundle.heads.get(name)
            if head is None:
                continue
            z = logits[name] * head.temperature_
            proba = expit(z) if head.multilabel else softmax(z, axis=1)
            k = min(bundle.config.top_k, proba.shape[1])
            order = np.argsort(-proba, axis=1)[:, :k]
            for i in range(n):
                top = [{"label": str(head.classes_[j]), "probability": round(float(proba[i, j]), 4)} for j in order[i]]
                result = {"label": top[0]["label"], "probability": top[0]["probability"], "top_k": top}
                if head.multilabel:
                    result["labels"] = [str(head.classes_[j]) for j in np.flatnonzero(proba[i] >= head.threshold)] \
                        or [top[0]["label"]]
                if top[0]["probability"] < bundle.config.review_threshold:
                    reasons[i].append(f"{name}_low_confidence")
                out[i][name] = result
        risk = bundle.heads.get("risk")
        if risk is not None:
            scores = bundle.calibrated_risk(expit(logits["risk"] * risk.temperature_))
            for i in range(n):
                s = float(scores[i])
                out[i]["risk"] = {"score": round(s, 4), "level": bundle.risk_level(s)}
        for i in range(n):
            out[i]["needs_review"] = bool(reasons[i])
            out[i]["review_reasons"] = reasons[i]
        if attributions is not None:
            segment = word_units_fn()
            prefix = len(self.base.prefix)
            for i, text in enumerate(texts):
                units = segment(text)
                for name in bundle.heads:
                    if name in out[i] and name in attributions[i]:
                        out[i][name]["phrases"] = phrases_from_tokens(
                            text, units, attributions[i][name], spans[i], prefix, bundle.config.n_phrases)
        return out


_TOKENIZERS: dict[tuple[str, str], Any] = {}
_TOKENIZER_LOCK = threading.Lock()


def _tokenizer(path: str, sha256: str) -> Any:
    """One tokenizer per checkpoint and process: e5's 250k-piece vocabulary takes seconds to load, and
    a reload, a retrain or a cross-validation fold would otherwise pay it again."""
    with _TOKENIZER_LOCK:
        if (path, sha256) not in _TOKENIZERS:
            from transformers import AutoTokenizer

            from models.encoder.encoder import _quiet_transformers

            with _quiet_transformers():
                _TOKENIZERS[(path, sha256)] = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return _TOKENIZERS[(path, sha256)]


def _pad(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for r, x in enumerate(rows):
        ids[r, :len(x)] = x
        mask[r, :len(x)] = 1
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)



