"""The `finetune` backend's training loop: multi-task fine-tuning of the encoder with early stopping.

One encoder learns category, cause and risk together (a row missing a label adds nothing to that
head's loss). A stratified validation split carved from the training rows decides when to stop, then
calibrates each head (temperature scaling) and places the risk thresholds, as the other backends do on
out-of-fold scores. Runs on CUDA when present, else on the CPU with defaults sized for it.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import train_test_split
from torch import nn

from models.bundle import ModelBundle
from models.features import StructuredEncoder
from models.finetune import FineTunedModel, MultiTaskNet, TaskHead, fit_binary_temperature, pick_device
from models.heads import fit_temperature
from models.text import clean
from training.common import (
    FinetuneParams,
    Progress,
    TrainParams,
    choose_thresholds,
    score_histogram,
    split_feature_kinds,
)
from training.data import DataError, Dataset, labelled
from training.evaluate import level_metrics, levels_of

IGNORE = -100


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def validation_split(ds: Dataset, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified on the first single-label head whose classes each have two rows or more."""
    idx = np.arange(len(ds))
    n_valid = max(1, int(round(len(ds) * frac)))
    if len(ds) < 4 or not 0 < frac < 1:
        raise DataError(f"{ds.source}: fine-tuning needs a validation split: {len(ds)} rows, valid_frac {frac}")
    for head in ("category", "cause", "risk"):
        if head not in ds.heads or (head == "category" and ds.multilabel):
            continue
        col = ds.frame[head]
        y = col.astype(str).to_numpy()
        if col.notna().all() and pd.Series(y).value_counts().min() >= 2 and n_valid >= len(set(y)):
            tr, va = train_test_split(idx, test_size=n_valid, random_state=seed, stratify=y)
            return np.sort(tr), np.sort(va)
    tr, va = train_test_split(idx, test_size=n_valid, random_state=seed)
    return np.sort(tr), np.sort(va)


@dataclass
class Targets:
    """Per-head targets over all rows: class indices (IGNORE where unlabelled), multi-hot rows with a
    row mask, or 0/1 risk with NaN where unlabelled."""

    classes: dict[str, np.ndarray]
    single: dict[str, np.ndarray]
    multi: dict[str, tuple[np.ndarray, np.ndarray]]
    risk: np.ndarray | None


def build_targets(ds: Dataset) -> Targets:
    classes, single, multi = {}, {}, {}
    for head in ("category", "cause"):
        if head not in ds.heads:
            continue
        rows = labelled(ds, head)
        values = ds.frame[head]
        if head == "category" and ds.multilabel:
            names = np.array(sorted({lab for i in rows for lab in values.iloc[i]}))
            index = {c: k for k, c in enumerate(names)}
            M = np.zeros((len(ds), len(names)), dtype=np.float32)
            has = np.zeros(len(ds), dtype=bool)
            for i in rows:
                has[i] = True
                for lab in values.iloc[i]:
                    M[i, index[lab]] = 1.0
            classes[head], multi[head] = names, (M, has)
        else:
            names = np.array(sorted({str(values.iloc[i]) for i in rows}))
            y = np.full(len(ds), IGNORE, dtype=np.int64)
            y[rows] = np.searchsorted(names, [str(values.iloc[i]) for i in rows])
            classes[head], single[head] = names, y
        if len(classes[head]) < 2:
            raise DataError(f"{ds.source}: the {head} head needs at least two classes")
    risk = None
    if "risk" in ds.heads:
        risk = np.full(len(ds), np.nan)
        rows = labelled(ds, "risk")
        risk[rows] = ds.frame["risk"].iloc[rows].astype(int).to_numpy()
    return Targets(classes, single, multi, risk)


def _class_weights(y: np.ndarray, k: int) -> np.ndarray:
    """'balanced' weights n / (k · count) over the labelled rows; 1 for a class with no rows."""
    y = y[y != IGNORE]
    counts = np.bincount(y, minlength=k).astype(np.float64)
    return np.where(counts > 0, len(y) / (k * np.maximum(counts, 1)), 1.0)


def _batches(rows: np.ndarray, size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    rows = rng.permutation(rows) if rng is not None else rows
    return [rows[i:i + size] for i in range(0, len(rows), size)]


class _Loss:
    """The masked multi-task loss of a batch: each head's mean over the rows it has labels for."""

    def __init__(self, targets: Targets, device: torch.device, class_weight: str | None, train_rows: np.ndarray):
        self.targets, self.device = targets, device
        self.ce: dict[str, nn.Module] = {}
        for head, y in targets.single.items():
            w = _class_weights(y[train_rows], len(targets.classes[head])) if class_weight == "balanced" else None
            self.ce[head] = nn.CrossEntropyLoss(
                weight=None if w is None else torch.tensor(w, dtype=torch.float32, device=device),
                ignore_index=IGNORE, reduction="sum")

    def __call__(self, out: dict[str, torch.Tensor], rows: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        t, dev = self.targets, self.device
        total = torch.zeros((), device=dev)
        parts: dict[str, float] = {}
        for head, y in t.single.items():
            yb = torch.from_numpy(y[rows]).to(dev)
            n = int((yb != IGNORE).sum())
            if n:
                loss = self.ce[head](out[head], yb) / n
                total, parts[head] = total + loss, float(loss.detach())
        for head, (M, has) in t.multi.items():
            keep = torch.from_numpy(has[rows]).to(dev)
            if keep.any():
                loss = nn.functional.binary_cross_entropy_with_logits(
                    out[head][keep], torch.from_numpy(M[rows]).to(dev)[keep])
                total, parts[head] = total + loss, float(loss.detach())
        if t.risk is not None:
            yr = t.risk[rows]
            keep = ~np.isnan(yr)
            if keep.any():
                k = torch.from_numpy(keep).to(dev)
                loss = nn.functional.binary_cross_entropy_with_logits(
                    out["risk"][k], torch.from_numpy(yr[keep].astype(np.float32)).to(dev))
                total, parts["risk"] = total + loss, float(loss.detach())
        return total, parts


def _run(net: MultiTaskNet, ids: list[list[int]], S: np.ndarray, pad: int, device: torch.device,
         batch: np.ndarray) -> dict[str, torch.Tensor]:
    from models.finetune import _pad

    input_ids, mask = _pad([ids[i] for i in batch], pad, device)
    return net(input_ids, mask, torch.from_numpy(S[batch]).to(device))


def _evaluate(net: MultiTaskNet, ids, S, rows: np.ndarray, pad: int, device: torch.device, loss_fn: _Loss,
              batch_size: int) -> tuple[float, dict[str, np.ndarray]]:
    """Validation loss (summed over heads, weighted like training) and the raw logits of `rows`."""
    net.eval()
    order = rows[np.argsort([len(ids[i]) for i in rows], kind="stable")]
    logits: dict[str, list[np.ndarray]] = {}
    total, n = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(order), batch_size * 2):
            batch = order[start:start + batch_size * 2]
            out = _run(net, ids, S, pad, device, batch)
            loss, _ = loss_fn(out, batch)
            total, n = total + float(loss) * len(batch), n + len(batch)
            for name, z in out.items():
                logits.setdefault(name, []).append(z.double().cpu().numpy())
    position = np.argsort(np.argsort([len(ids[i]) for i in rows], kind="stable"), kind="stable")
    merged = {name: np.concatenate(parts)[position] for name, parts in logits.items()}
    return total / max(n, 1), merged


def _optimizer(net: MultiTaskNet, fp: FinetuneParams) -> torch.optim.Optimizer:
    decay, no_decay, heads = [], [], []
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("heads."):
            heads.append(p)
        elif p.ndim < 2:  # biases and LayerNorm weights are not decayed
            no_decay.append(p)
        else:
            decay.append(p)
    return torch.optim.AdamW([
        {"params": decay, "lr": fp.lr, "weight_decay": fp.weight_decay},
        {"params": no_decay, "lr": fp.lr, "weight_decay": 0.0},
        {"params": heads, "lr": fp.head_lr, "weight_decay": fp.weight_decay},
    ])


def _validation_metrics(targets: Targets, logits: dict[str, np.ndarray], va: np.ndarray,
                        heads: dict[str, TaskHead]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for head, y in targets.single.items():
        yv = y[va]
        keep = yv != IGNORE
        if keep.any():
            pred = logits[head][keep].argmax(1)
            out[head] = {"macro_f1": round(float(f1_score(yv[keep], pred, labels=np.unique(yv[keep]),
                                                          average="macro", zero_division=0)), 4),
                         "accuracy": round(float((pred == yv[keep]).mean()), 4)}
    for head, (M, has) in targets.multi.items():
        keep = has[va]
        if keep.any():
            P = (1 / (1 + np.exp(-logits[head][keep] * heads[head].temperature_)) >= heads[head].threshold)
            out[head] = {"micro_f1": round(float(f1_score(M[va][keep], P, average="micro", zero_division=0)), 4)}
    if targets.risk is not None:
        yr = targets.risk[va]
        keep = ~np.isnan(yr)
        if keep.any() and len(np.unique(yr[keep])) == 2:
            out["risk"] = {"roc_auc": round(float(roc_auc_score(yr[keep], logits["risk"][keep])), 4)}
    return out


def fit_finetune_bundle(ds: Dataset, params: TrainParams, progress: Progress,
                        clean_texts: list[str] | None = None) -> ModelBundle:
    """Fine-tune the encoder on `ds` and wrap the result as a bundle (same interface as the others)."""
    from models.encoder.encoder import Encoder

    fp: FinetuneParams = params.finetune
    started = time.perf_counter()
    set_seed(fp.seed)
    device = pick_device(fp.device)
    texts = clean_texts if clean_texts is not None else [clean(t) for t in ds.texts]
    targets = build_targets(ds)
    if not targets.classes and targets.risk is None:
        raise DataError(f"{ds.source}: no head to fine-tune: the data has no category, cause or risk labels")
    tr, va = validation_split(ds, fp.valid_frac, fp.seed)

    structured, S, meta_struct = None, np.zeros((len(ds), 0), dtype=np.float32), {}
    if targets.risk is not None:
        rows = labelled(ds, "risk")
        frame = ds.frame.iloc[rows].reset_index(drop=True)
        numeric, categorical = split_feature_kinds(frame, ds.features)
        structured = StructuredEncoder(numeric=numeric, categorical=categorical).fit(frame)
        S = structured.transform(ds.frame.reset_index(drop=True))
        meta_struct = {"numeric": numeric, "categorical": categorical, "selection": {"kept": list(structured.groups_),
                                                                                    "how": "all fields, in the risk layer"}}
    mean = np.zeros(S.shape[1], dtype=np.float32)
    scale = np.ones(S.shape[1], dtype=np.float32)
    if structured is not None and structured.scaled_columns_:
        cols = structured.scaled_columns_
        mean[cols] = S[tr][:, cols].mean(axis=0)
        std = S[tr][:, cols].std(axis=0)
        scale[cols] = np.where(std > 0, std, 1.0)

    tasks = {h: len(c) for h, c in targets.classes.items()}
    if targets.risk is not None:
        tasks["risk"] = 1
    base = Encoder(params.encoder, variant="fp32", cache=False)
    model = FineTunedModel(base, tasks, n_struct=S.shape[1], struct_mean=mean, struct_scale=scale,
                           max_length=fp.max_length, freeze_embeddings=fp.freeze_embeddings, dropout=fp.dropout,
                           device=fp.device, multilabel=tuple(targets.multi))
    progress("fine-tune: loading the encoder", 0, 1)
    net = model.new_net().to(device)
    ids = model.tokenize(texts)["input_ids"]
    Sx = model.scale_struct(S, len(ds))
    pad = model.pad_id()
    loss_fn = _Loss(targets, device, params.class_weight, tr)
    optimizer = _optimizer(net, fp)
    steps_per_epoch = math.ceil(len(tr) / fp.batch_size)
    total_steps = steps_per_epoch * fp.epochs if fp.max_steps is None else min(fp.max_steps, steps_per_epoch * fp.epochs)
    warmup = max(1, int(total_steps * fp.warmup))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup))))
    rng = np.random.default_rng(fp.seed)
    best_loss, best_state, best_epoch, bad, step = math.inf, None, 0, 0, 0
    history = []
    for epoch in range(1, fp.epochs + 1):
        net.train()
        seen, running = 0, 0.0
        for batch in _batches(tr, fp.batch_size, rng):
            if step >= total_steps:
                break
            out = _run(net, ids, Sx, pad, device, batch)
            loss, _ = loss_fn(out, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            seen += len(batch)
            running += float(loss.detach()) * len(batch)
            progress(f"fine-tune epoch {epoch}", step - (epoch - 1) * steps_per_epoch, steps_per_epoch)
        val_loss, _ = _evaluate(net, ids, Sx, va, pad, device, loss_fn, fp.batch_size)
        history.append({"epoch": epoch, "steps": step, "train_loss": round(running / max(seen, 1), 4),
                        "validation_loss": round(val_loss, 4),
                        "seconds": round(time.perf_counter() - started, 1)})
        if val_loss < best_loss - 1e-4:
            best_loss, best_epoch, bad = val_loss, epoch, 0
            best_state = {n: p.detach().to("cpu", copy=True) for n, p in net.named_parameters() if p.requires_grad}
        else:
            bad += 1
        if bad >= max(1, fp.patience) or step >= total_steps:
            break
    if best_state is not None:
        net.load_state_dict(best_state, strict=False)
    _, logits = _evaluate(net, ids, Sx, va, pad, device, loss_fn, fp.batch_size)

    bundle = ModelBundle(counter=None, tfidf=None, heads={}, structured=structured, config=params.predict)
    labels: dict[str, list[str]] = {}
    for head, names in targets.classes.items():
        if head in targets.multi:
            M, has = targets.multi[head]
            keep = va[has[va]]
            t = fit_binary_temperature(logits[head][has[va]], M[keep]) if len(keep) else 1.0
            bundle.heads[head] = TaskHead(head, names, t, multilabel=True, threshold=params.multilabel_threshold)
        else:
            y = targets.single[head][va]
            keep = y != IGNORE
            t = fit_temperature(logits[head][keep], y[keep]) if keep.any() else 1.0
            bundle.heads[head] = TaskHead(head, names, t)
        labels[head] = [str(c) for c in names]
    if targets.risk is not None:
        yr = targets.risk[va]
        keep = ~np.isnan(yr)
        t = fit_binary_temperature(logits["risk"][keep], yr[keep])
        bundle.heads["risk"] = TaskHead("risk", np.array([0, 1]), t)
        score = 1 / (1 + np.exp(-logits["risk"][keep] * t))
        # Held-out validation scores, as the other backends use out-of-fold ones.
        bundle.risk_thresholds = choose_thresholds(score, yr[keep].astype(int), params.predict)
        bundle.meta["risk_reference_histogram"] = score_histogram(score)
        bundle.meta["expected_alert_rates"] = {
            level: f["alert_rate"] for level, f in
            level_metrics(yr[keep].astype(int), levels_of(score, bundle.risk_thresholds)).items()}
        bundle.meta["structured_features"] = meta_struct
    model.attach(net)
    bundle.finetuned = model
    bundle.meta["labels"] = labels
    bundle.meta["params"] = params.as_dict()
    bundle.meta["encoder"] = {"path": str(base.path), "sha256": base.sha256, "prefix": base.prefix,
                              "name": base.marker.get("name", base.path.name)}
    bundle.meta["finetune"] = {
        "device": str(device), "train_rows": int(len(tr)), "validation_rows": int(len(va)),
        "epochs_run": len(history), "best_epoch": best_epoch, "steps": step, "history": history,
        "trainable_parameters": int(sum(p.numel() for n, p in net.named_parameters() if n in set(model.trainable))),
        "total_parameters": int(sum(p.numel() for p in net.parameters())),
        "temperatures": {h: round(float(bundle.heads[h].temperature_), 4) for h in bundle.heads},
        "validation": _validation_metrics(targets, logits, va, bundle.heads),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return bundle
