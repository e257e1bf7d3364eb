"""`make bench`: run every benchmark, then rewrite the README's tables from bench/results/*.json.
`python -m bench.run_all --table-only` only rewrites the tables from the stored results."""

from __future__ import annotations

import json
import sys
from typing import Any

from bench import accuracy, speed
from bench import digest as digest_bench
from bench import letters as letters_bench
from bench import transformer as transformer_bench
from bench.common import RESULTS, replace_readme_block


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _ratio(ours: float, plain: float) -> str:
    return f"{ours / plain:.2f}×" if plain else "–"


def accuracy_table(r: dict[str, Any]) -> str:
    rows = ["| benchmark (protocol in ../shared/data/README.md) | metric | ours | plain baseline, same run | target |",
            "|---|---|---|---|---|"]
    for key, label, target in (("taidi_bodies", "taidi2020c bodies, 5-fold", "≥ 0.91"),
                               ("taidi_titles", "taidi2020c titles, 5-fold", "≥ 0.90")):
        t = r.get(key)
        if t:
            rows.append(f"| {label} (n={t['n']}) | macro-F1 (pooled) | {t['ours']['macro_f1']:.4f} | "
                        f"{t['plain']['macro_f1']:.4f} | {target} |")
            rows.append(f"| | accuracy | {t['ours']['accuracy']:.4f} | {t['plain']['accuracy']:.4f} | |")
    c = r.get("cfpb")
    if c:
        both, text = c["text_plus_fields"], c["text_only"]
        rows.append(f"| CFPB disputed, time split, text + product,issue,state,tags | ROC-AUC | "
                    f"{both['risk']['roc_auc']:.4f} | {c['plain_text_lr']['roc_auc']:.4f} (text-only LR) | ≥ 0.65 |")
        rows.append(f"| | PR-AUC / ECE | {both['risk']['pr_auc']:.4f} / {both['risk']['ece']:.4f} | "
                    f"{c['plain_text_lr']['pr_auc']:.4f} / {c['plain_text_lr']['ece']:.4f} | |")
        rows.append(f"| CFPB, our text-only risk head | ROC-AUC / PR-AUC / ECE | {text['risk']['roc_auc']:.4f} / "
                    f"{text['risk']['pr_auc']:.4f} / {text['risk']['ece']:.4f} | | |")
        rows.append(f"| CFPB product (11 classes), time split | macro-F1 | {both['product_macro_f1']:.4f} | | |")
    car = r.get("car_12365auto")
    if car:
        rows.append(f"| car_12365auto code letters, multi-label, 5-fold (n={car['n']}) | micro-F1 / macro-F1 | "
                    f"{car['micro_f1']:.4f} / {car['macro_f1']:.4f} | | report |")
    b = r.get("bank_dev")
    if b and "default" in b:
        ours, base = b["default"], b["baseline"]
        d, v, x, bd = ours["bank_dev"], ours["demo_validation"], ours["cross_fit"], base["bank_dev"]

        def level(f: dict[str, Any], name: str) -> str:
            lv = f[name]
            return f"{_f(lv['recall'])} / {_f(lv['precision'])} / {_f(lv['alert_rate'])}"

        rows.append(f"| bank_dev (200, other writers), default model | category / cause macro-F1 | "
                    f"{d['category_macro_f1']:.4f} / {d['cause_macro_f1']:.4f} | | ≥ 0.85 / ≥ 0.75 |")
        rows.append(f"| | risk ROC-AUC / PR-AUC / ECE | {d['risk_roc_auc']:.4f} / {d['risk_pr_auc']:.4f} / "
                    f"{d['risk_ece']:.4f} | {bd['risk_roc_auc']:.4f} / {bd['risk_pr_auc']:.4f} / {bd['risk_ece']:.4f} "
                    "(高 by recall 0.5) | ≥ 0.95 / – / ≤ 0.08 |")
        rows.append(f"| | 高: recall / precision / alert rate | {level(d['risk_levels'], '高')} | "
                    f"{level(bd['risk_levels'], '高')} | recall ≥ 0.50 at precision ≥ 0.80 |")
        rows.append(f"| | 中 or above: recall / precision / alert rate | {level(d['risk_levels'], '中')} | "
                    f"{level(bd['risk_levels'], '中')} | |")
        ci = ours.get("bank_dev_interval")
        if ci:
            def span(key: str) -> str:
                return f"{ci[key][0]:.2f}–{ci[key][1]:.2f}"
            rows.append(f"| | 95% interval, {ci['resamples']:,} bootstrap resamples of the 200 rows: category / "
                        f"cause F1, ECE, 高 recall / precision | {span('category_macro_f1')} / {span('cause_macro_f1')}, "
                        f"{span('risk_ece')}, {span('high_recall')} / {span('high_precision')} | | |")
        rows.append(f"| demo corpus validation split (20%) | category / cause macro-F1, risk ROC-AUC / ECE | "
                    f"{v['category_macro_f1']:.4f} / {v['cause_macro_f1']:.4f}, {v['risk_roc_auc']:.4f} / "
                    f"{v['risk_ece']:.4f} | | |")
        rows.append(f"| | 高 / 中 or above: recall / precision / alert rate | {level(v['risk_levels'], '高')}; "
                    f"{level(v['risk_levels'], '中')} | | |")
        rows.append(f"| demo training rows, writer batches held out (cross-fit) | risk ROC-AUC / ECE | "
                    f"{x['roc_auc']:.4f} / {x['ece']:.4f} | | |")
        rows.append(f"| | 高 / 中 or above: recall / precision / alert rate | {level(x['levels'], '高')}; "
                    f"{level(x['levels'], '中')} | | |")
    return "\n".join(rows) + f"\n\nMeasured {r['machine']['measured_at']} on {r['machine']['cpus']} cores."


def speed_table(s: dict[str, Any]) -> str:
    tr, size, cold = s["training_s"], s["bundle_mb"], s["cold_start"]
    single, batch, tok = s["single_prediction"], s["batch"], s["tokenisation_per_core"]
    rows = [f"Data: {s['data']}. Medians; the plain pipeline (jieba + scikit-learn TF-IDF + LinearSVC) was "
            "measured in the same run.", "",
            "| measure | ours | plain | ratio | target |", "|---|---|---|---|---|",
            f"| batch scoring, 1 process | {batch['ours_1_process_texts_per_s']:,} texts/s | "
            f"{batch['plain_texts_per_s']:,} texts/s | "
            f"{_ratio(batch['ours_1_process_texts_per_s'], batch['plain_texts_per_s'])} | ≥ 3,000 texts/s |",
            f"| batch scoring, 2 processes (warm pool) | {batch['ours_2_processes_texts_per_s']:,} texts/s | | "
            f"{_ratio(batch['ours_2_processes_texts_per_s'], batch['plain_texts_per_s'])} | |",
            f"| single prediction p50 | {single['ours_p50_ms']:.2f} ms | {single['plain_p50_ms']:.2f} ms | "
            f"{_ratio(single['ours_p50_ms'], single['plain_p50_ms'])} | ≤ 1 ms |",
            f"| single prediction with explanations p50 | {single['ours_with_explanations_p50_ms']:.2f} ms | | | |",
            f"| bundle size | {size['ours']:.1f} MB | {size['plain']:.1f} MB ({size['plain_compressed']:.1f} MB "
            f"compressed) | {_ratio(size['ours'], size['plain'])} | ≤ 25 MB |",
            f"| training on all bodies | {tr['ours']:.1f} s | {tr['plain']:.1f} s | "
            f"{_ratio(tr['ours'], tr['plain'])} | ≤ 60 s |",
            f"| cold load + first prediction | {cold['ours']['load_and_first_prediction_s']:.2f} s | "
            f"{cold['plain']['load_and_first_prediction_s']:.2f} s | "
            f"{_ratio(cold['ours']['load_and_first_prediction_s'], cold['plain']['load_and_first_prediction_s'])}"
            " | ≤ 2 s |",
            f"| tokenisation per core | rjieba {tok['rjieba_mb_per_s']:.1f} MB/s | jieba {tok['jieba_mb_per_s']:.1f} MB/s "
            f"| {_ratio(tok['rjieba_mb_per_s'], tok['jieba_mb_per_s'])} | ≥ 5 MB/s |"]
    return "\n".join(rows) + f"\n\nMeasured {s['machine']['measured_at']} on {s['machine']['cpus']} cores."


def _f(x: Any, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def transformer_table(t: dict[str, Any]) -> str:
    """The hybrid and finetune backends beside the linear one measured in the same run."""
    rows = ["| benchmark (protocol in ../shared/data/README.md) | metric | hybrid | linear, same run | target |",
            "|---|---|---|---|---|"]
    for key, label in (("fullcols", "taidi2020c messages_fullcols, title + text, 5-fold"),
                       ("bodies", "taidi2020c bodies, 5-fold")):
        r = t.get(key)
        if r:
            rows.append(f"| {label} (n={r['n']}) | macro-F1 (pooled) | {_f(r['hybrid']['macro_f1'])} | "
                        f"{_f(r['linear']['macro_f1'])} | ≥ {r['target_hybrid_macro_f1']:.2f} |")
            rows.append(f"| | accuracy | {_f(r['hybrid']['accuracy'])} | {_f(r['linear']['accuracy'])} | |")
            if "embedding_lr" in r:
                ref = r["reference"]
                rows.append(f"| | frozen e5 + logistic regression alone, same folds | "
                            f"{_f(r['embedding_lr']['macro_f1'])} | | references: TF-IDF + LinearSVC "
                            f"{ref['tfidf_linearsvc']}, naive concatenation {ref['naive_concatenation_linearsvc']} |")
    c = t.get("cfpb")
    if c:
        h, lin = c["hybrid"], c["linear"]
        rows.append(f"| CFPB disputed, time split, text + product,issue,state,tags | ROC-AUC / PR-AUC / ECE | "
                    f"{_f(h['risk']['roc_auc'])} / {_f(h['risk']['pr_auc'])} / {_f(h['risk']['ece'])} | "
                    f"{_f(lin['risk']['roc_auc'])} / {_f(lin['risk']['pr_auc'])} / {_f(lin['risk']['ece'])} | report |")
        rows.append(f"| CFPB product (11 classes), time split | macro-F1 | {_f(h['product_macro_f1'])} | "
                    f"{_f(lin['product_macro_f1'])} | |")
    b = t.get("bank_dev")
    if b:
        h, lin = b["hybrid"]["bank_dev"], b["linear"]["bank_dev"]
        rows.append(f"| bank_dev (200, other writers), default model | category / cause macro-F1 | "
                    f"{_f(h['category_macro_f1'])} / {_f(h['cause_macro_f1'])} | "
                    f"{_f(lin['category_macro_f1'])} / {_f(lin['cause_macro_f1'])} | report |")
        rows.append(f"| | risk ROC-AUC / ECE | {_f(h['risk_roc_auc'])} / {_f(h['risk_ece'])} | "
                    f"{_f(lin['risk_roc_auc'])} / {_f(lin['risk_ece'])} | |")
        hv, lv = b["hybrid"]["demo_validation"], b["linear"]["demo_validation"]
        rows.append(f"| demo corpus validation split (20%) | category / cause macro-F1, risk ROC-AUC | "
                    f"{_f(hv['category_macro_f1'])} / {_f(hv['cause_macro_f1'])} / {_f(hv['risk_roc_auc'])} | "
                    f"{_f(lv['category_macro_f1'])} / {_f(lv['cause_macro_f1'])} / {_f(lv['risk_roc_auc'])} | |")
    s = t.get("speed")
    if s:
        e, p = s["encoder"], s["single_prediction_p50_ms"]
        rows.append(f"| encoder throughput, {s['texts']['n']} texts of {s['texts']['chars']} chars "
                    f"(~{s['texts']['tokens_median']:.0f} tokens), {e['variant']}, {e['threads']} threads | "
                    f"texts/s (median of rounds {', '.join(str(x) for x in e['texts_per_s_rounds'])}) | "
                    f"{e['texts_per_s']:.1f} | | ≥ {s['targets']['texts_per_s']} |")
        rows.append(f"| single-text prediction, a text never seen before, with / without explanations | p50 | "
                    f"{p['hybrid_explain']:.1f} / {p['hybrid']:.1f} ms | {p['linear_explain']:.1f} / "
                    f"{p['linear']:.1f} ms | ≤ {s['targets']['hybrid_single_p50_ms']} ms |")
    f = t.get("finetune_demo")
    if f:
        v, d = f["demo_validation"], f.get("bank_dev", {})
        rows += ["", "Fine-tuned e5 (finetune backend) on the demo corpus, on the CPU: "
                 f"{f['epochs']} epoch(s) at most ({f['finetune']['epochs_run']} run), max_length {f['max_length']}, batch {f['batch_size']}, lr {f['lr']}, "
                 f"{f['finetune']['steps']} steps"
                 f"{' (capped: a budget run, not trained to convergence)' if f.get('max_steps') else ''} "
                 f"in {f['training_seconds'] / 60:.0f} min on {f['device']} "
                 f"(load average {f['load_average_start_end'][0][0]}); {f['weights_mb']} MB of changed weights "
                 "stored beside the bundle.", "",
                 "| finetune | category macro-F1 | cause macro-F1 | risk ROC-AUC | risk ECE |", "|---|---|---|---|---|",
                 f"| demo validation split (20%) | {_f(v['category_macro_f1'])} | {_f(v['cause_macro_f1'])} | "
                 f"{_f(v['risk_roc_auc'])} | {_f(v['risk_ece'])} |"]
        if d:
            rows.append(f"| bank_dev | {_f(d['category_macro_f1'])} | {_f(d['cause_macro_f1'])} | "
                        f"{_f(d['risk_roc_auc'])} | {_f(d['risk_ece'])} |")
    stamps = sorted(v["measured_at"] for v in t.values() if isinstance(v, dict) and "measured_at" in v)
    when = f"{stamps[0]} to {stamps[-1]}" if stamps else t["machine"]["measured_at"]
    return "\n".join(rows) + (f"\n\nMeasured {when} on {t['machine']['cpus']} cores shared with other work "
                               "(load averages are in bench/results/transformer.json).")


def write_tables() -> None:
    acc, spd = _load("accuracy"), _load("speed")
    if acc:
        replace_readme_block("accuracy", accuracy_table(acc))
    if spd:
        replace_readme_block("speed", speed_table(spd))
    trf = _load("transformer")
    if trf:
        replace_readme_block("transformer", transformer_table(trf))
    dig = _load("digest")
    if dig:
        replace_readme_block("digest", digest_bench.table(dig))
    let = _load("letters")
    if let:
        replace_readme_block("letters", letters_bench.table(let))


def main() -> None:
    if "--table-only" not in sys.argv:
        accuracy.main()
        speed.main()
        digest_bench.main([])
        letters_bench.main([])
        transformer_bench.main([])  # all sections but the hour-long CPU fine-tune (python -m bench.transformer finetune_demo)
    write_tables()


if __name__ == "__main__":
    main()
