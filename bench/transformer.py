"""Transformer backends on the shared data (protocols in ../shared/data/README.md), each beside the
linear backend measured in the same run, plus encoder throughput and single-text latency with the
kept onnx-int8 runtime. Writes bench/results/transformer.json.

Run: python -m bench.transformer [fullcols] [bodies] [cfpb] [bank_dev] [speed] [finetune_demo]
(no section: all but finetune_demo, which fine-tunes e5 on the demo corpus on the CPU for ~1 hour;
rerunning some sections keeps the others' stored results). Embeddings are cached on disk
(var/embeddings or $XIAOBAO_CACHE): the first run encodes ~19,000 texts, reruns only read them.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold

from bench.common import RESULTS, ROOT, shared, write_result
from bench.encoder import BATCH as SPEED_BATCH
from bench.encoder import CHARS as SPEED_CHARS
from bench.encoder import load_texts as speed_texts  # the texts bench/encoder.py times
from models.registry import Registry
from models.settings import ModelSettings, in_scope
from models.text import clean
from training.common import FinetuneParams, TrainParams
from training.data import Columns, Dataset, load_dataset
from training.evaluate import evaluate
from training.fit import encode, load_encoder
from training.pipeline import cross_validate, train

TARGETS = {"fullcols_hybrid_macro_f1": 0.87, "bodies_hybrid_macro_f1": 0.93, "encoder_texts_per_s": 50,
           "hybrid_single_p50_ms": 60}
CFPB_FIELDS = ("product", "issue", "state", "tags")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cv_summary(m: dict[str, Any], seconds: float) -> dict[str, Any]:
    c = m["category"]
    return {"macro_f1": c["macro_f1"], "accuracy": c["accuracy"], "fold_mean_macro_f1": c["fold_mean"],
            "per_fold": c["per_fold"], "seconds": round(seconds, 1)}


def _embedding_lr(ds: Dataset) -> dict[str, Any]:
    """Frozen encoder + logistic regression alone, same folds: what the embeddings bring by themselves."""
    E = encode(load_encoder(None), [clean(t) for t in ds.texts])
    y = ds.frame["category"].astype(str).to_numpy()
    pred = np.empty(len(y), dtype=object)
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(E, y):
        pred[te] = LogisticRegression(C=10.0, max_iter=3000, class_weight="balanced").fit(E[tr], y[tr]).predict(E[te])
    return {"macro_f1": round(float(f1_score(y, pred, average="macro")), 4),
            "accuracy": round(float(accuracy_score(y, pred)), 4)}


def _taidi(name: str, columns: Columns, *, embedding_lr: bool) -> dict[str, Any] | None:
    path = shared(f"taidi2020c/{name}.csv")
    if path is None:
        return None
    ds = load_dataset(path, columns)
    out: dict[str, Any] = {"protocol": "stratified 5-fold, shuffle, random_state=0; pooled out-of-fold predictions",
                           "n": len(ds), "load_average_start": _load()}
    for backend in ("linear", "hybrid"):
        t0 = time.perf_counter()
        m = cross_validate(ds, TrainParams(backend=backend), folds=5)
        out[backend] = _cv_summary(m, time.perf_counter() - t0)
        print(f"{name} {backend}: macro-F1 {out[backend]['macro_f1']}", file=sys.stderr)
    if embedding_lr:
        out["embedding_lr"] = _embedding_lr(ds)
    return out


def fullcols() -> dict[str, Any] | None:
    """1,377 time-stamped messages, title and body joined."""
    r = _taidi("messages_fullcols", Columns(text=("title", "text"), features=()), embedding_lr=True)
    if r:
        r["text"] = "title + text"
        r["target_hybrid_macro_f1"] = TARGETS["fullcols_hybrid_macro_f1"]
        r["reference"] = {"tfidf_linearsvc": 0.837, "e5_lr": 0.828, "naive_concatenation_linearsvc": 0.859}
    return r


def bodies() -> dict[str, Any] | None:
    r = _taidi("bodies", Columns(features=()), embedding_lr=False)
    if r:
        r["target_hybrid_macro_f1"] = TARGETS["bodies_hybrid_macro_f1"]
    return r


def cfpb() -> dict[str, Any] | None:
    path = shared("cfpb/complaints_2015_2016.csv")
    if path is None:
        return None
    columns = Columns(category="product", cause=None, risk="disputed", time="date_received", features=CFPB_FIELDS)
    ds = load_dataset(path, columns)
    out: dict[str, Any] = {"protocol": "time split: train date_received < 2016-01-01, test 2016; "
                                       "text + product, issue, state, tags",
                           "load_average_start": _load()}
    for backend in ("linear", "hybrid"):
        t0 = time.perf_counter()
        m = cross_validate(ds, TrainParams(backend=backend), test_from="2016-01-01")
        out[backend] = {"risk": {k: m["risk"][k] for k in ("roc_auc", "pr_auc", "ece", "brier")},
                        "product_macro_f1": m["category"]["macro_f1"], "n_test": m["n"],
                        "seconds": round(time.perf_counter() - t0, 1)}
    return out


def _bank_dev_eval(registry: Registry, version: str, path: Path) -> dict[str, Any]:
    m = evaluate(registry.load(version), load_dataset(path, for_training=False))
    return {"category_macro_f1": m["category"]["macro_f1"], "cause_macro_f1": m["cause"]["macro_f1"],
            "risk_roc_auc": m["risk"]["roc_auc"], "risk_pr_auc": m["risk"]["pr_auc"], "risk_ece": m["risk"]["ece"]}


def _demo_validation(metrics: dict[str, Any]) -> dict[str, Any]:
    return {"category_macro_f1": metrics["category"]["macro_f1"], "cause_macro_f1": metrics["cause"]["macro_f1"],
            "risk_roc_auc": metrics["risk"]["roc_auc"], "risk_ece": metrics["risk"]["ece"]}


def bank_dev() -> dict[str, Any] | None:
    path = shared("bank_dev/bank_requests_dev.csv")
    if path is None:
        return None
    out: dict[str, Any] = {"protocol": "default model of each backend trained on the demo corpus (80/20 split), "
                                       "evaluated on all 200 rows", "load_average_start": _load()}
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp))
        for backend in ("linear", "hybrid"):
            t0 = time.perf_counter()
            result = train(load_dataset(ROOT / "data/demo/demo_corpus.csv"), TrainParams(backend=backend), registry)
            out[backend] = {"demo_validation": _demo_validation(result.metrics),
                            "bank_dev": _bank_dev_eval(registry, result.version, path),
                            "training_seconds": round(time.perf_counter() - t0, 1)}
    return out


def _p50_ms(bundle: Any, texts: list[str], explain: bool) -> float:
    times = []
    for t in texts:
        t0 = time.perf_counter()
        bundle.predict([t], [{"channel": "电话客服", "repeat_count": 1}], explain=explain)
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def speed(rounds: int = 3, latency_texts: int = 40) -> dict[str, Any] | None:
    """Encoder throughput (onnx-int8, cache off) and single-text prediction latency of the hybrid
    and linear default models; every call sees a text never encoded before (a fresh cache), as a
    new complaint would. Rounds interleave the measures so a busy machine slows them alike."""
    texts = speed_texts()
    if texts is None:
        return None
    from models.encoder import Encoder

    load_start = _load()
    encoder = Encoder(variant="onnx-int8", cache=False)
    encoder.encode(texts[:SPEED_BATCH])  # warm-up: session start, first-call costs
    tok = encoder._get_tokenizer()
    n_tokens = [len(x) for x in tok([encoder.prefix + t for t in texts])["input_ids"]]
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp) / "registry")
        # Trained on the demo corpus, whose embeddings the shared cache holds; loaded with an empty one.
        demo = load_dataset(ROOT / "data/demo/demo_corpus.csv")
        versions = {b: train(demo, TrainParams(backend=b), registry).version for b in ("linear", "hybrid")}
        fresh_cache = Registry(registry.root, registry.settings.but(cache=Path(tmp) / "cache"))
        bundles = {b: fresh_cache.load(v) for b, v in versions.items()}
        fresh = iter(f"{t}（{k}）" for k in range(10**6) for t in texts)  # never the same text twice
        throughput: list[float] = []
        lat: dict[str, list[float]] = {"hybrid": [], "hybrid_explain": [], "linear": [], "linear_explain": []}
        for _ in range(rounds):
            t0 = time.perf_counter()
            encoder.encode(texts, batch_size=SPEED_BATCH)
            throughput.append(len(texts) / (time.perf_counter() - t0))
            for name in lat:
                backend, explain = name.split("_")[0], name.endswith("explain")
                lat[name].append(_p50_ms(bundles[backend], [next(fresh) for _ in range(latency_texts)], explain))
    hybrid_p50 = statistics.median(lat["hybrid_explain"])
    return {
        "texts": {"source": "taidi2020c/bodies.csv", "n": len(texts), "chars": SPEED_CHARS,
                  "tokens_median": float(np.median(n_tokens))},
        "encoder": {"variant": encoder.variant, "threads": encoder.threads, "batch_size": SPEED_BATCH,
                    "texts_per_s": round(statistics.median(throughput), 1),
                    "texts_per_s_rounds": [round(x, 1) for x in throughput]},
        "single_prediction_p50_ms": {name: round(statistics.median(v), 2) for name, v in lat.items()},
        "single_prediction_rounds_ms": lat,
        "load_average_start_end": [load_start, _load()],
        "targets": {"texts_per_s": TARGETS["encoder_texts_per_s"],
                    "texts_per_s_met": statistics.median(throughput) >= TARGETS["encoder_texts_per_s"],
                    "hybrid_single_p50_ms": TARGETS["hybrid_single_p50_ms"],
                    "hybrid_single_p50_met": hybrid_p50 <= TARGETS["hybrid_single_p50_ms"]},
    }


def finetune_demo(epochs: int = 1, max_length: int = 96, max_steps: int | None = None) -> dict[str, Any] | None:
    """Fine-tune e5 on the demo corpus on this machine's CPU with a small budget (`max_steps` caps it
    further); validation metrics (inner split for early stopping, then the 20% holdout) and bank_dev,
    with the time taken."""
    params = TrainParams(backend="finetune", finetune=FinetuneParams(epochs=epochs, max_length=max_length,
                                                                     max_steps=max_steps))
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp))
        load_start = _load()
        t0 = time.perf_counter()
        result = train(load_dataset(ROOT / "data/demo/demo_corpus.csv"), params, registry,
                       progress=_every_50_steps)
        seconds = time.perf_counter() - t0
        card = registry.card(result.version)
        path = shared("bank_dev/bank_requests_dev.csv")
        out = {"protocol": "demo corpus 80/20 split (as train); the encoder fine-tuned on 85% of the 80%, "
                           "early stopping and calibration on the other 15%",
               "device": card["finetune"]["device"], "epochs": epochs, "max_length": max_length,
               "max_steps": max_steps,
               "batch_size": params.finetune.batch_size, "lr": params.finetune.lr,
               "finetune": {k: card["finetune"][k] for k in ("train_rows", "validation_rows", "epochs_run",
                                                              "steps", "history", "trainable_parameters",
                                                              "total_parameters", "temperatures", "validation",
                                                              "seconds")},
               "demo_validation": _demo_validation(result.metrics),
               "training_seconds": round(seconds, 1),
               "weights_mb": round(card["weight_files"]["finetune.safetensors"]["bytes"] / 1e6, 1),
               "load_average_start_end": [load_start, _load()]}
        if path is not None:
            out["bank_dev"] = _bank_dev_eval(registry, result.version, path)
            bundle = registry.load(result.version)
            sample = [t[:SPEED_CHARS] for t in load_dataset(path, for_training=False).texts[:20]]
            out["single_prediction_p50_ms"] = {"explain": _p50_ms(bundle, sample, True),
                                               "no_explain": _p50_ms(bundle, sample, False)}
    return out


def _every_50_steps(stage: str, done: int, total: int) -> None:
    if stage.startswith("fine-tune") and (done % 50 == 0 or done == total):
        print(f"{stage}: {done}/{total} ({time.strftime('%H:%M:%S')})", file=sys.stderr, flush=True)


SECTIONS = {"fullcols": fullcols, "bodies": bodies, "cfpb": cfpb, "bank_dev": bank_dev, "speed": speed,
            "finetune_demo": finetune_demo}
DEFAULT = ("fullcols", "bodies", "cfpb", "bank_dev", "speed")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = sys.argv[1:] if argv is None else argv
    only = [a for a in args if a in SECTIONS] or list(DEFAULT)
    steps = [int(a.split("=", 1)[1]) for a in args if a.startswith("--finetune-steps=")]
    epochs = [int(a.split("=", 1)[1]) for a in args if a.startswith("--finetune-epochs=")]
    ours: dict[str, Any] = {}
    models = ModelSettings.from_env()  # the encoder and embedding cache every section uses
    for name in only:
        t0 = time.perf_counter()
        with in_scope(models):
            if name == "finetune_demo":
                section = finetune_demo(epochs=epochs[-1] if epochs else 1, max_steps=steps[-1] if steps else None)
            else:
                section = SECTIONS[name]()
        if section is not None:
            ours[name] = section | {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        # After each section, so a late failure loses nothing; the file is re-read each time, so the
        # sections of another run (the hour-long fine-tune, say) are kept.
        previous = RESULTS / "transformer.json"
        result = ({k: v for k, v in json.loads(previous.read_text(encoding="utf-8")).items() if k != "machine"}
                  if previous.is_file() else {})
        write_result("transformer", result | ours)
    return ours


if __name__ == "__main__":
    main()
