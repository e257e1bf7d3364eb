"""Speed and size on the taidi bodies, beside the plain pipeline measured in the same run.
Writes bench/results/speed.json. Run: python -m bench.speed"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import joblib
import pandas as pd

from bench.baseline import plain_pipeline
from bench.common import ROOT, median_seconds, shared, write_result
from models.registry import BUNDLE_FILE, Registry
from models.text import Segmenter, clean
from training.data import Columns, load_dataset
from training.fit import TrainParams, fit_bundle

COLD_OURS = """
import time, sys
t0 = time.perf_counter()
from models.registry import load_bundle_dir
b = load_bundle_dir(sys.argv[1])
b.predict(["市民反映小区附近工地夜间施工噪音扰民"])
print(time.perf_counter() - t0)
"""
COLD_PLAIN = """
import time, sys
t0 = time.perf_counter()
import joblib
m = joblib.load(sys.argv[1])
m.predict(["市民反映小区附近工地夜间施工噪音扰民"])
print(time.perf_counter() - t0)
"""


def cold_start(script: str, path: Path, repeat: int = 5) -> dict[str, float]:
    """Seconds from a fresh interpreter's first line (imports included) to its first prediction."""
    inside, whole = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                             cwd=ROOT, check=True)
        whole.append(time.perf_counter() - t0)
        inside.append(float(out.stdout.strip().splitlines()[-1]))
    return {"load_and_first_prediction_s": round(statistics.median(inside), 3),
            "process_start_to_prediction_s": round(statistics.median(whole), 3)}


def per_text_p50(fn, texts: list[str]) -> float:
    times = []
    for t in texts:
        t0 = time.perf_counter()
        fn(t)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def tokenisation(texts: list[str]) -> dict[str, float]:
    mb = sum(len(t.encode()) for t in texts) / 1e6
    out = {}
    for engine in ("rjieba", "jieba"):
        seg = Segmenter(engine=engine)
        seg.cut(texts[0])  # dictionary load is not tokenisation
        out[f"{engine}_mb_per_s"] = round(mb / median_seconds(lambda s=seg: [s.cut(t) for t in texts], 3), 2)
    return out


def main() -> dict[str, Any]:
    path = shared("taidi2020c/bodies.csv")
    if path is None:
        return {}
    frame = pd.read_csv(path)
    texts = frame["text"].astype(str).tolist()
    y = frame["category"].to_numpy()
    ds = load_dataset(path, Columns(features=()))
    result: dict[str, Any] = {"data": f"taidi2020c bodies, {len(texts)} texts, median "
                                      f"{int(frame['text'].str.len().median())} chars"}

    t0 = time.perf_counter()
    bundle = fit_bundle(ds, TrainParams())
    ours_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = plain_pipeline().fit(texts, y)
    plain_train = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp) / "reg")
        version = registry.save(bundle, {"data": {"file": str(path)}})
        bundle_path = registry.folder(version)
        ours_bytes = (bundle_path / BUNDLE_FILE).stat().st_size
        plain_path = Path(tmp) / "plain.joblib"
        joblib.dump(plain, plain_path)
        plain_bytes = plain_path.stat().st_size
        joblib.dump(plain, Path(tmp) / "plain-z.joblib", compress=3)
        plain_z_bytes = (Path(tmp) / "plain-z.joblib").stat().st_size
        cold = {"ours": cold_start(COLD_OURS, bundle_path), "plain": cold_start(COLD_PLAIN, plain_path)}

    sample = texts[:500]
    bundle.predict(sample[:5])
    single = {
        "ours_p50_ms": round(per_text_p50(lambda t: bundle.predict([t], explain=False), sample), 3),
        "ours_with_explanations_p50_ms": round(per_text_p50(lambda t: bundle.predict([t]), sample), 3),
        "plain_p50_ms": round(per_text_p50(lambda t: plain.predict([t]), sample), 3),
    }
    bundle.predict(texts, explain=False, n_jobs=2)  # starts the worker pool, reported separately below
    batch = {
        "ours_1_process_texts_per_s": round(len(texts) / median_seconds(
            lambda: bundle.predict(texts, explain=False), 3)),
        "ours_2_processes_texts_per_s": round(len(texts) / median_seconds(
            lambda: bundle.predict(texts, explain=False, n_jobs=2), 3)),
        "plain_texts_per_s": round(len(texts) / median_seconds(lambda: plain.predict(texts), 3)),
        "note": "2 processes: warm worker pool; starting the pool adds about a second to the first call",
    }
    result.update({
        "training_s": {"ours": round(ours_train, 1), "plain": round(plain_train, 1)},
        "bundle_mb": {"ours": round(ours_bytes / 1e6, 2), "plain": round(plain_bytes / 1e6, 2),
                      "plain_compressed": round(plain_z_bytes / 1e6, 2)},
        "cold_start": cold,
        "single_prediction": single,
        "batch": batch,
        "tokenisation_per_core": tokenisation([clean(t) for t in texts]),
    })
    write_result("speed", result)
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return result


if __name__ == "__main__":
    main()
