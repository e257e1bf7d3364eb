# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · How good is the current model, and where should the alert threshold be?
#
# **For** the ML engineer (per-class quality, calibration) and the 消保部 (how many 投诉风险提示函 a week
# against how many escalations slip through). The model is the registry's champion (`$XIAOBAO_REGISTRY`,
# default `models/registry`; `make train` makes one). It is measured on its own validation split (20% of
# the demo corpus it never trained on) and on `bank_dev` (200 requests written outside the team, evaluated,
# never trained on). Without `../shared/data` only the validation split is shown.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(next(p for p in (Path.cwd(), Path.cwd() / "notebooks") if (p / "nbsupport.py").is_file())))
import nbsupport as nbs

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display
from matplotlib.ticker import PercentFormatter
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, precision_recall_curve

from models.registry import VALIDATION_FILE
from training.data import Columns, load_dataset
from training.evaluate import metrics_from_predictions, predict_dataset

nbs.charts()
pd.set_option("display.precision", 3)
registry, folder, card, bundle = nbs.champion()
sets = {"validation": load_dataset(folder / VALIDATION_FILE, Columns(risk="risk"), for_training=False)}
bank_dev_path = nbs.shared_file(nbs.BANK_DEV)
if bank_dev_path is not None:
    sets["bank_dev"] = load_dataset(bank_dev_path, for_training=False)
predictions = {name: predict_dataset(bundle, ds) for name, ds in sets.items()}
metrics = {name: metrics_from_predictions(ds, predictions[name]) for name, ds in sets.items()}
thresholds = bundle.risk_thresholds
print(f"model {bundle.version} from {registry.root}, trained on {card['data']['file']} "
      f"({card['data']['train_rows']} rows); risk thresholds 高 ≥ {thresholds['高']:.3f}, 中 ≥ {thresholds['中']:.3f}")
print(", ".join(f"{name}: {len(ds)} rows" for name, ds in sets.items()))


# %%
def frame(name: str) -> pd.DataFrame:
    """Truth and prediction side by side, one row per request."""
    ds, pred = sets[name], predictions[name]
    out = pd.DataFrame({"channel": ds.frame.get("channel")})
    for head in ("category", "cause"):
        out[head] = ds.frame.get(head)
        out[f"pred_{head}"] = [p[head]["label"] for p in pred]
    out["escalated"] = ds.frame.get("risk")
    out["score"] = [p["risk"]["score"] for p in pred]
    out["level"] = [p["risk"]["level"] for p in pred]
    return out


frames = {name: frame(name) for name in sets}
summary = pd.DataFrame.from_dict(orient="index", data={name: {
    "rows": m["n"], "category macro-F1": m["category"]["macro_f1"], "category accuracy": m["category"]["accuracy"],
    "cause macro-F1": m["cause"]["macro_f1"], "cause accuracy": m["cause"]["accuracy"],
    "risk ROC-AUC": m["risk"]["roc_auc"], "risk PR-AUC": m["risk"]["pr_auc"], "risk ECE": m["risk"]["ece"],
    "escalation rate": m["risk"]["positive_rate"], "mean risk score": frames[name]["score"].mean(),
} for name, m in metrics.items()}).astype({"rows": int})
summary

# %% [markdown]
# ## Per class: precision, recall, F1
#
# Macro-F1 above averages these rows with equal weight. Look for classes with low recall (requests of that
# class routed elsewhere) and for classes whose F1 drops on bank_dev: those are phrased differently by other
# writers, and the demo corpus needs more variety there.

# %%
per_class = {}
for head in ("category", "cause"):
    per_class[head] = pd.concat({name: pd.DataFrame(m[head]["per_class"]).T for name, m in metrics.items()},
                                axis=1).sort_values(("validation", "support"), ascending=False)
    per_class[head].index.name = head
    display(per_class[head])

# %% [markdown]
# ## Confusion matrices
#
# Rows are the true class, columns the predicted one, shares of each row (numbers: requests). The diagonal is
# what the model gets right; a bright cell off it is a pair of classes the model mixes up.

# %%
def confusion(head: str) -> None:
    order = per_class[head].index.tolist()
    fig, axes = plt.subplots(1, len(frames), figsize=(7.5 * len(frames), 6.8), squeeze=False)
    for ax, (name, f) in zip(axes[0], frames.items()):
        cm = confusion_matrix(f[head], f[f"pred_{head}"], labels=order)
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i, j in zip(*np.nonzero(cm)):
            ax.text(j, i, cm[i, j], ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(order)), order, rotation=90)
        ax.set_yticks(range(len(order)), order)
        ax.set_xlabel(f"predicted {head}")
        ax.set_ylabel(f"true {head}")
        ax.set_title(f"{head}: {name} (macro-F1 {metrics[name][head]['macro_f1']:.3f})")
    fig.tight_layout()


confusion("category")

# %%
confusion("cause")

# %% [markdown]
# ## Risk: calibration and precision-recall
#
# The risk score is meant as a probability: of requests scored 0.3, about 30% should escalate. The reliability
# diagram plots the observed escalation rate per score bin against the mean score in it; the diagonal is
# perfect calibration, and ECE is the size-weighted mean distance from it. The table after it compares mean
# score and observed rate per channel, which shows *where* a set's calibration goes wrong.

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 5))
colors = {"validation": "#2f5d8a", "bank_dev": "#c0392b"}
axes[0].plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
for name, f in frames.items():
    y, s = f["escalated"].to_numpy(int), f["score"].to_numpy()
    observed, predicted = calibration_curve(y, s, n_bins=10, strategy="uniform")
    axes[0].plot(predicted, observed, "o-", color=colors[name], label=f"{name} (ECE {metrics[name]['risk']['ece']:.3f})")
    precision, recall, cut = precision_recall_curve(y, s)
    axes[1].plot(recall, precision, color=colors[name], label=f"{name} (PR-AUC {metrics[name]['risk']['pr_auc']:.3f})")
    for level, marker in (("高", "s"), ("中", "^")):
        hit = s >= thresholds[level]
        axes[1].plot(y[hit].sum() / y.sum(), y[hit].mean(), marker, color=colors[name], markersize=9,
                     markeredgecolor="black", label=f"{name}: level {level} and above")
axes[0].set_xlabel("mean risk score in the bin")
axes[0].set_ylabel("observed escalation rate")
axes[0].set_title("reliability diagram (10 equal-width bins)")
axes[0].legend()
axes[1].set_xlabel("recall: share of escalations flagged")
axes[1].set_ylabel("precision: share of flagged that escalate")
axes[1].set_title("precision-recall for risk (markers: the current 高 / 中 thresholds)")
axes[1].legend(fontsize=8)
fig.tight_layout()
by_channel = pd.concat({name: f.groupby("channel").agg(n=("score", "size"), mean_score=("score", "mean"),
                                                         escalation_rate=("escalated", "mean"))
                        for name, f in frames.items()}, axis=1)
by_channel

# %%
for name, f in frames.items():
    gap = (f.groupby("channel")["score"].mean() - f.groupby("channel")["escalated"].mean())
    print(f"{name}: mean score {f['score'].mean():.3f} vs observed {f['escalated'].mean():.3f} overall; "
          f"largest per-channel gaps (score − observed): "
          + ", ".join(f"{c} {g:+.2f}" for c, g in gap.reindex(gap.abs().sort_values(ascending=False).index)[:3].items()))

# %% [markdown]
# ## Letters per week against missed escalations: choosing the threshold
#
# An alert fires when a request's risk level reaches `XIAOBAO_ALERT_MIN_LEVEL` (default 高) and for every
# 监管转办 referral whatever its score. Moving the threshold trades alerts (work for the departments) against
# escalations nobody was warned about. The curves below apply each threshold to a set and scale it to
# `WEEKLY_VOLUME` requests a week — set it to your own volume; by default it is the demo corpus's mean.
#
# Alerts are an **upper bound** on letters: alerts to one department within `XIAOBAO_GROUP_WINDOW_MINUTES`
# share one letter, and a repeat from the same customer about the same category and cause within
# `XIAOBAO_DEDUP_WINDOW_DAYS` joins its open alert instead of raising a new one.

# %%
WEEKLY_VOLUME = None  # requests a week at your bank; None: the demo corpus's mean weekly volume
ALERT_CHANNELS = ["监管转办"]  # XIAOBAO_ALERT_CHANNELS

if WEEKLY_VOLUME is None:
    received = pd.to_datetime(pd.read_csv(nbs.demo_corpus(), usecols=["received_at"])["received_at"])
    WEEKLY_VOLUME = float(received.dt.to_period("W").value_counts().mean())
grid = np.unique(np.r_[np.linspace(0, 1, 401), list(thresholds.values())])


def tradeoff(f: pd.DataFrame) -> pd.DataFrame:
    y, s = f["escalated"].to_numpy(int), f["score"].to_numpy()
    referral = f["channel"].isin(ALERT_CHANNELS).to_numpy()
    rows = []
    for t in grid:
        alerted = (s >= t) | referral
        missed = ~alerted & (y == 1)
        rows.append({"threshold": t, "alerts_per_week": alerted.mean() * WEEKLY_VOLUME,
                     "missed_per_week": missed.mean() * WEEKLY_VOLUME, "missed_share": missed.sum() / y.sum(),
                     "high_recall": (s[y == 1] >= t).mean()})
    return pd.DataFrame(rows)


curves = {name: tradeoff(f) for name, f in frames.items()}
print(f"weekly volume: {WEEKLY_VOLUME:.0f} requests; escalations a week at the validation split's rate: "
      f"{frames['validation']['escalated'].mean() * WEEKLY_VOLUME:.1f}")

fig, axes = plt.subplots(1, 2, figsize=(14, 5))
share_ax = axes[0].twinx()
for name, c in curves.items():
    style = "-" if name == "validation" else "--"
    axes[0].plot(c["threshold"], c["alerts_per_week"], style, color="#2f5d8a", label=f"alerts a week ({name})")
    share_ax.plot(c["threshold"], c["missed_share"], style, color="#c0392b", label=f"escalations missed ({name})")
    axes[1].plot(c["missed_per_week"], c["alerts_per_week"], style, color=colors[name], label=name)
    for level, marker in (("高", "s"), ("中", "^")):
        at = c.loc[c["threshold"] == thresholds[level]].iloc[0]
        axes[1].plot(at["missed_per_week"], at["alerts_per_week"], marker, color=colors[name], markersize=10,
                     markeredgecolor="black")
        axes[1].annotate(f"{level} ({name})", (at["missed_per_week"], at["alerts_per_week"]),
                         textcoords="offset points", xytext=(8, 4), fontsize=8)
for level in ("高", "中"):
    axes[0].axvline(thresholds[level], color="grey", linestyle=":")
    axes[0].text(thresholds[level], 0.02, f" {level}", transform=axes[0].get_xaxis_transform())
axes[0].set_xlabel("risk threshold for an alert")
axes[0].set_ylabel(f"alerts a week at {WEEKLY_VOLUME:.0f} requests (blue)")
share_ax.set_ylabel("share of escalations without an alert (red)")
share_ax.yaxis.set_major_formatter(PercentFormatter(1))
share_ax.set_ylim(0, 1)
axes[0].set_title("alerts and missed escalations as the threshold moves\n(solid: validation, dashed: bank_dev)")
axes[1].set_xlabel("escalations a week without an alert")
axes[1].set_ylabel("alerts a week (upper bound on letters)")
axes[1].set_title("the trade-off: every point is one threshold")
axes[1].legend()
fig.tight_layout()

# %% [markdown]
# The table reads the same curves at the current 高 and 中 thresholds and at the thresholds that would miss
# at most a given share of escalations on the validation split. `high_recall` is the value of
# `xiaobao train --high-recall R` that would put 高 at that threshold (the share of the validation split's
# escalations scored at or above it).

# %%
val = curves["validation"]
rows = {f"current {level}": val.loc[val["threshold"] == thresholds[level]].iloc[0] for level in ("高", "中")}
for target in (0.05, 0.10, 0.20, 0.30):
    ok = val[val["missed_share"] <= target]
    rows[f"miss ≤ {target:.0%}"] = ok.iloc[-1]
choice = pd.DataFrame(rows).T
if "bank_dev" in curves:
    bd = curves["bank_dev"].set_index("threshold")
    choice["bank_dev missed_share"] = bd.loc[choice["threshold"], "missed_share"].to_numpy()
    choice["bank_dev alerts_per_week"] = bd.loc[choice["threshold"], "alerts_per_week"].to_numpy()
choice

# %% [markdown]
# **Applying a choice.** Either retrain so that 高 sits where you want it:
# `xiaobao train --data data/demo/demo_corpus.csv --high-recall R --promote` with `R` from the
# `high_recall` column (and `--medium-recall` for 中), or keep the model and alert from 中 upwards with
# `XIAOBAO_ALERT_MIN_LEVEL=中` in the service's environment. The thresholds are placed on the validation
# split; on bank_dev the same threshold misses a different share (dashed curves), which is the calibration
# gap seen above.
