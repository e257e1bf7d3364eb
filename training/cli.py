"""`xiaobao train | evaluate | cv | predict | models …`: the model commands of the CLI."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.base import BACKENDS, DataError

if TYPE_CHECKING:  # imported when a command runs: `xiaobao keys list` should not wait for scikit-learn
    from models.registry import Registry
    from training.common import TrainParams
    from training.data import Columns


class CliError(Exception):
    """A one-line message for the user; the CLI exits with status 2."""


def _progress_printer(quiet: bool):
    if quiet or not sys.stderr.isatty():
        last: dict[str, int] = {}

        def plain(stage: str, done: int, total: int) -> None:
            # Without a terminal, one line per stage start and end keeps logs readable.
            if not quiet and (done == total or stage not in last):
                print(f"[{stage}] {done}/{total}", file=sys.stderr)
            last[stage] = done
        return plain
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def bar(stage: str, done: int, total: int) -> None:
        b = bars.get(stage) or bars.setdefault(stage, tqdm(total=total, desc=stage, file=sys.stderr, leave=False))
        b.n = done
        b.refresh()
        if done >= total:
            b.close()
    return bar


def column_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("columns (defaults match the demo corpus)")
    g.add_argument("--text-col", default="text", help="text column; 'title,text' joins several")
    g.add_argument("--category-col", default=None, help="default: category ('' for none)")
    g.add_argument("--cause-col", default=None, help="default: cause ('' for none)")
    g.add_argument("--risk-col", default=None, help="0/1 dispute outcome; default: escalated ('' for none)")
    g.add_argument("--time-col", default=None)
    g.add_argument("--batch-col", default=None,
                   help="which rows were written together; risk calibration holds out whole batches "
                        "(default: batch, where the file has it; '' for none)")
    g.add_argument("--feature-cols", default=None,
                   help="structured fields for the risk head, comma-separated (default: channel,repeat_count,amount)")
    g.add_argument("--multilabel-sep", default=None,
                   help="the category column holds several labels split by this separator (e.g. ',')")
    return p


def columns_from(args: argparse.Namespace) -> Columns:
    """Options left at None fall back to the demo corpus's columns; named ones must exist."""
    from training.data import Columns

    defaults = Columns()
    named = {"category": args.category_col, "cause": args.cause_col, "risk": args.risk_col,
             "features": args.feature_cols, "batch": args.batch_col}
    explicit = frozenset(k for k, v in named.items() if v is not None)

    def pick(value: str | None, default: str | None) -> str | None:
        return default if value is None else (value.strip() or None)  # '' switches a head off

    features = defaults.features if args.feature_cols is None else tuple(
        c.strip() for c in args.feature_cols.split(",") if c.strip())
    return Columns(
        text=tuple(c.strip() for c in args.text_col.split(",") if c.strip()),
        category=pick(args.category_col, defaults.category), cause=pick(args.cause_col, defaults.cause),
        risk=pick(args.risk_col, defaults.risk), time=args.time_col, batch=pick(args.batch_col, defaults.batch),
        features=features,
        multilabel_sep=args.multilabel_sep, explicit=explicit,
    )


def train_params(args: argparse.Namespace) -> TrainParams:
    from models.bundle import PredictConfig
    from training.common import FinetuneParams, TrainParams

    ft = FinetuneParams()
    finetune = FinetuneParams(
        max_length=args.ft_max_length or ft.max_length, batch_size=args.ft_batch_size or ft.batch_size,
        lr=args.ft_lr or ft.lr, epochs=args.ft_epochs or ft.epochs,
        patience=ft.patience if args.ft_patience is None else args.ft_patience,
        max_steps=args.ft_max_steps, device=args.device, seed=getattr(args, "seed", ft.seed))
    return TrainParams(
        backend=args.backend, segmenter=args.segmenter, C=args.C, encoder=args.encoder, finetune=finetune,
        predict=PredictConfig(top_k=args.top_k, review_threshold=args.review_threshold,
                              medium_recall=args.medium_recall, high_recall=args.high_recall,
                              high_precision=None if args.high_precision == 0 else args.high_precision),
    )


def check_encoder(args: argparse.Namespace) -> None:
    """Backends that need an encoder (and a device) learn at once, before any data is read, if it is unusable."""
    if args.backend in ("hybrid", "finetune"):
        from models.encoder.checkpoint import check_checkpoint
        from models.settings import current

        check_checkpoint(args.encoder or current().encoder)
    if args.backend == "finetune":
        from models.finetune import pick_device

        try:
            pick_device(args.device)
        except (ValueError, RuntimeError) as exc:
            raise CliError(f"--device {args.device}: {exc}") from None


def model_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("model")
    g.add_argument("--backend", choices=BACKENDS, default="linear")
    g.add_argument("--encoder", default=None,
                   help="hybrid/finetune: a local transformers checkpoint folder (default: models/encoder_e5, "
                        "`make encoder`)")
    g.add_argument("--segmenter", choices=("rjieba", "jieba"), default="rjieba")
    g.add_argument("--C", type=float, default=1.5, help="regularisation of the category/cause heads")
    g.add_argument("--top-k", type=int, default=3)
    g.add_argument("--review-threshold", type=float, default=0.5,
                   help="top-1 probability under which a prediction needs review")
    g.add_argument("--medium-recall", type=float, default=0.85, help="share of disputes at risk level 中 or above")
    g.add_argument("--high-precision", type=float, default=0.85,
                   help="高 starts at the lowest score where this share of alerts became disputes, on "
                        "writers the model never saw (0: use --high-recall instead)")
    g.add_argument("--high-recall", type=float, default=0.5,
                   help="with --high-precision 0, or where no score reaches it: share of disputes at 高")
    f = p.add_argument_group("finetune backend (defaults sized for a CPU)")
    f.add_argument("--ft-epochs", type=int, default=None, help="at most this many epochs (default 3)")
    f.add_argument("--ft-max-length", type=int, default=None, help="tokens per text (default 128)")
    f.add_argument("--ft-batch-size", type=int, default=None, help="default 16")
    f.add_argument("--ft-lr", type=float, default=None, help="encoder learning rate (default 3e-5)")
    f.add_argument("--ft-patience", type=int, default=None,
                   help="epochs without a better validation loss before stopping (default 1)")
    f.add_argument("--ft-max-steps", type=int, default=None, help="stop after this many optimiser steps")
    f.add_argument("--device", default="auto", help="auto (cuda if present, else cpu), cpu or cuda[:N]")
    return p


def _registry(args) -> Registry:
    """--registry, else the folder of the model settings the entry point (`xiaobao.cli:main`) put in scope."""
    from models.registry import Registry
    from models.settings import current

    settings = current()
    return Registry.from_settings(settings.but(registry=args.registry) if getattr(args, "registry", None) else settings)


def _load(args, columns: Columns, *, for_training: bool):
    from training.data import load_dataset

    ds = load_dataset(args.data, columns, for_training=for_training)
    summary = ds.skipped_summary()
    if summary:
        print(summary, file=sys.stderr)
    return ds


def _print(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=None if not sys.stdout.isatty() else 2))


def _print_promoting(args, registry: Registry, version: str, out: dict[str, Any]) -> None:
    """Prints `out`, with the promotion's answer where --promote asks for one; a refused promotion
    is printed, then raised (the version stays registered; the CLI exits with status 3)."""
    from training.pipeline import PromotionRefused, promote

    if args.promote:
        try:
            out["promotion"] = promote(registry, version, force=args.force)
        except PromotionRefused as exc:
            out["promotion"] = {"version": version, "promoted": False, "refused": str(exc)}
            _print(out)
            raise
    _print(out)


def cmd_train(args) -> None:
    from training.pipeline import train

    columns = columns_from(args)
    if args.test_from and not columns.time:
        raise CliError("--test-from needs --time-col")
    check_encoder(args)
    ds = _load(args, columns, for_training=True)
    registry = _registry(args)
    result = train(ds, train_params(args), registry, valid_frac=args.valid_frac, seed=args.seed,
                   test_from=args.test_from, progress=_progress_printer(args.quiet))
    out: dict[str, Any] = {"version": result.version, "seconds": round(result.seconds, 1),
                           "validation": result.metrics}
    _print_promoting(args, registry, result.version, out)


def cmd_evaluate(args) -> None:
    from training.evaluate import evaluate

    bundle = _registry(args).load(args.model)
    ds = _load(args, columns_from(args), for_training=False)
    missing_heads = [h for h in ds.heads if h not in bundle.heads]
    if not [h for h in ds.heads if h in bundle.heads]:
        raise CliError(f"{args.data}: labels for {', '.join(ds.heads) or 'no head'}, "
                       f"but model {bundle.version} has {', '.join(bundle.heads)}")
    metrics = evaluate(bundle, ds, n_jobs=args.jobs)
    metrics["model_version"] = bundle.version
    if missing_heads:
        metrics["not_evaluated"] = missing_heads
    _print(metrics) if args.json else _print_table(metrics)


def cmd_cv(args) -> None:
    from training.pipeline import cross_validate

    columns = columns_from(args)
    if args.test_from and not columns.time:
        raise CliError("--test-from needs --time-col")
    check_encoder(args)
    ds = _load(args, columns, for_training=True)
    metrics = cross_validate(ds, train_params(args), folds=args.folds, test_from=args.test_from,
                             progress=_progress_printer(args.quiet))
    _print(metrics) if args.json else _print_table(metrics)


def _print_table(metrics: dict[str, Any]) -> None:
    print(f"n = {metrics['n']}")
    for head in ("category", "cause"):
        if head in metrics:
            m = metrics[head]
            head_line = "  ".join(f"{k} {m[k]:.4f}" for k in ("macro_f1", "micro_f1", "accuracy") if k in m)
            print(f"{head}: {head_line}")
            for label, pc in sorted(m["per_class"].items(), key=lambda kv: -kv[1]["support"]):
                print(f"    {label:<16} f1 {pc['f1']:.3f}  p {pc['precision']:.3f}  r {pc['recall']:.3f}  "
                      f"n {pc['support']}")
    if "risk" in metrics:
        print("risk: " + "  ".join(f"{k} {v}" for k, v in metrics["risk"].items() if not isinstance(v, list)))


def cmd_predict(args) -> None:
    bundle = _registry(args).load(args.model)
    if args.text:
        texts, fields = args.text, None
        if args.channel or args.repeat_count is not None or args.amount is not None:
            fields = [{"channel": args.channel, "repeat_count": args.repeat_count, "amount": args.amount}] * len(texts)
        results = bundle.predict(texts, fields)
        for text, result in zip(texts, results, strict=True):
            if args.json:
                _print({"text": text, **result})
            else:
                _print_prediction(text, result)
        return
    if not args.data:
        raise CliError("give --text or --data")
    from training.data import load_dataset

    columns = columns_from(args)
    ds = load_dataset(args.data, columns, for_training=False)
    fields = ds.frame[ds.features] if ds.features else None
    results = bundle.predict(ds.texts, fields, explain=not args.no_explain, n_jobs=args.jobs)
    if args.out:
        import pandas as pd

        rows = []
        for row_no, r in zip(ds.frame["row"], results, strict=True):
            flat = {"row": int(row_no)}
            for head in ("category", "cause"):
                if head in r:
                    flat[f"pred_{head}"] = r[head]["label"]
                    flat[f"pred_{head}_probability"] = r[head]["probability"]
            if "risk" in r:
                flat["risk_score"] = r["risk"]["score"]
                flat["risk_level"] = r["risk"]["level"]
            flat["needs_review"] = r["needs_review"]
            rows.append(flat)
        out = Path(args.out)
        table = pd.DataFrame(rows)
        table.to_csv(out, index=False) if out.suffix != ".jsonl" else table.to_json(out, orient="records", lines=True,
                                                                                  force_ascii=False)
        print(f"wrote {len(rows)} predictions to {out}", file=sys.stderr)
    else:
        for r in results:
            _print(r)


def _print_prediction(text: str, r: dict[str, Any]) -> None:
    print(text)
    for head in ("category", "cause"):
        if head in r:
            top = "  ".join(f"{t['label']} {t['probability']:.2f}" for t in r[head]["top_k"])
            phrases = "、".join(p["phrase"] for p in r[head].get("phrases", []))
            print(f"  {head}: {top}" + (f"   ← {phrases}" if phrases else ""))
    if "risk" in r:
        phrases = "、".join(p["phrase"] for p in r["risk"].get("phrases", []))
        print(f"  risk: {r['risk']['level']} ({r['risk']['score']:.2f})" + (f"   ← {phrases}" if phrases else ""))
    if r["needs_review"]:
        print(f"  needs review: {', '.join(r['review_reasons'])}")


def cmd_models(args) -> None:
    from training.pipeline import promote

    registry = _registry(args)
    if args.models_cmd == "list":
        current = registry.current()
        for version in registry.versions():
            card = registry.card(version)
            scores = card.get("metrics", {}).get("validation", {})
            summary = "  ".join(f"{h} {scores[h].get('macro_f1', scores[h].get('roc_auc'))}"
                                for h in ("category", "cause", "risk") if h in scores)
            mark = "*" if version == current else " "
            print(f"{mark} {version}  {Path(card['data']['file']).name}  rows {card['data']['rows']}  {summary}")
        if not registry.versions():
            print(f"no versions in {registry.root}", file=sys.stderr)
    elif args.models_cmd == "show":
        _print(registry.card(args.ref))
    elif args.models_cmd == "promote":
        data = _load(args, columns_from(args), for_training=False) if args.data else None
        _print(promote(registry, args.ref, data=data, force=args.force))
    elif args.models_cmd == "rollback":
        bad, previous = registry.rollback()
        _print({"rolled_back": bad, "current": previous})


# Writes the outcomes the service has recorded to a labelled file and returns its path: the service's
# side of `xiaobao recalibrate --from-outcomes`, handed in by xiaobao.cli (training does not import service).
OutcomeExporter = Callable[[argparse.Namespace, Path], Path]


def cmd_recalibrate(args, export_outcomes: OutcomeExporter | None = None) -> None:
    from training.recalibrate import recalibrate

    registry = _registry(args)
    if getattr(args, "from_outcomes", False):
        if export_outcomes is None:
            raise CliError("--from-outcomes needs the service's database; pass --data FILE instead")
        # Kept beside the registry, so the card's data file (and its sha256) stays checkable.
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        args.data = str(export_outcomes(args, registry.root / "outcomes" / f"outcomes-{stamp}.csv"))
    ds = _load(args, columns_from(args), for_training=False)
    result = recalibrate(registry, args.model, ds, check_frac=args.check_frac, seed=args.seed)
    record = result.card["recalibration"]
    out: dict[str, Any] = {"version": result.version, "from": result.parent, "data": record["data"],
                           "calibrator": record["calibrator"], "thresholds": record["thresholds"],
                           "check": record["check"]}
    _print_promoting(args, registry, result.version, out)


def register(sub: argparse._SubParsersAction, export_outcomes: OutcomeExporter | None = None) -> None:
    cols, model = column_options(), model_options()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--registry", default=None, help="registry folder (default: models/registry or $XIAOBAO_REGISTRY)")
    common.add_argument("--quiet", action="store_true", help="no progress output")
    jobs = argparse.ArgumentParser(add_help=False)
    jobs.add_argument("--jobs", type=int, default=-1,
                      help="worker processes for files of 2,000+ texts (-1: every core, 1: none)")

    p = sub.add_parser("train", parents=[cols, model, common], help="train a model and register it")
    p.add_argument("--data", required=True)
    p.add_argument("--valid-frac", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-from", default=None, help="validate on rows from this date on (needs --time-col)")
    p.add_argument("--promote", action="store_true", help="make it the champion unless it scores worse")
    p.add_argument("--force", action="store_true", help="with --promote: promote even if it scores worse")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", parents=[cols, common, jobs], help="score a labelled file with a model")
    p.add_argument("--model", default="current", help="bundle folder, 'current' or a version id")
    p.add_argument("--data", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("cv", parents=[cols, model, common], help="cross-validate on a labelled file")
    p.add_argument("--data", required=True)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--test-from", default=None, help="train before this date, test from it (needs --time-col)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser("predict", parents=[cols, common, jobs], help="predict texts or a file")
    p.add_argument("--model", default="current")
    p.add_argument("--text", action="append", help="a text to score (repeatable)")
    p.add_argument("--channel")
    p.add_argument("--repeat-count", type=int)
    p.add_argument("--amount", type=float)
    p.add_argument("--data", help="a file of texts")
    p.add_argument("--out", help="write predictions here (.csv or .jsonl)")
    p.add_argument("--no-explain", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("models", help="the model registry")
    msub = p.add_subparsers(dest="models_cmd", required=True)
    m = msub.add_parser("list", parents=[common], help="versions, * marks the champion")
    m.set_defaults(func=cmd_models)
    m = msub.add_parser("show", parents=[common], help="a version's model card")
    m.add_argument("ref", nargs="?", default="current")
    m.set_defaults(func=cmd_models)
    m = msub.add_parser("promote", parents=[cols, common], help="make a version the champion")
    m.add_argument("ref")
    m.add_argument("--data", help="compare champion and challenger on this file (default: the challenger's validation split)")
    m.add_argument("--force", action="store_true")
    m.set_defaults(func=cmd_models)
    m = msub.add_parser("rollback", parents=[common], help="restore the previous champion")
    m.set_defaults(func=cmd_models)

    p = sub.add_parser("recalibrate", parents=[cols, common],
                       help="refit a model's risk probabilities and levels on escalation outcomes (no retraining)")
    p.add_argument("--model", default="current", help="bundle folder, 'current' or a version id")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="a file with the texts and their outcomes (escalated 0/1)")
    if export_outcomes is not None:
        source.add_argument("--from-outcomes", action="store_true",
                            help="the outcomes recorded in the service's database (POST /v1/complaints/{id}/outcome)")
        p.add_argument("--database-url", default=None, help="default: XIAOBAO_DATABASE_URL")
    p.add_argument("--check-frac", type=float, default=0.3,
                   help="share of the outcomes held out to compare before and after (and to promote on)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--promote", action="store_true",
                   help="make it the champion unless it is calibrated worse on the held-out outcomes")
    p.add_argument("--force", action="store_true", help="with --promote: promote even if it is worse")
    p.set_defaults(func=partial(cmd_recalibrate, export_outcomes=export_outcomes))


KNOWN_ERRORS: tuple[type[Exception], ...] = (CliError, DataError)
