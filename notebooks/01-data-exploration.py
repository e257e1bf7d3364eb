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
# # 01 · The data: demo corpus, CFPB and bank_dev
#
# **For** the ML engineer and the 消保部 analyst who wants to know what the model learns from and what it is
# checked against. **Answers**: how large each set is, how its labels are shared, how long its texts are,
# how volume moves week by week, which channels and branches it comes from — and whether `bank_dev`
# escalates more often than the demo corpus, which would explain why the risk calibration measured on the
# demo split does not carry over to it (notebook 02 measures that calibration).
#
# Sets: the synthetic demo corpus (`data/demo/demo_corpus.csv`, built by `make corpus`), and from
# `../shared/data` (read in place, never copied: the licences forbid it) the US CFPB complaints — the only
# public set with a dispute label — and `bank_dev`, 200 requests in our schema written outside the team.
# Where `../shared/data` is absent the notebook shows the demo corpus only and says so.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(next(p for p in (Path.cwd(), Path.cwd() / "notebooks") if (p / "nbsupport.py").is_file())))
import nbsupport as nbs

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import PercentFormatter
from IPython.display import display
from scipy.stats import binomtest

nbs.charts()
pd.set_option("display.precision", 3)
demo = pd.read_csv(nbs.demo_corpus(), parse_dates=["received_at"], dtype={"customer_ref": str})
cfpb_path, bank_dev_path = nbs.shared_file(nbs.CFPB), nbs.shared_file(nbs.BANK_DEV)

# %% [markdown]
# ## The demo corpus
#
# Synthetic requests and complaints written for the project; `escalated` is 1 where the request later became
# a formal dispute. Look at the class shares: macro-F1 weighs every class equally, so a small class that the
# model misses costs as much as a large one.

# %%
weeks = demo.set_index("received_at").resample("W-SUN")["id"].count()
print(f"demo corpus: {len(demo):,} requests, {demo['received_at'].min():%Y-%m-%d} to {demo['received_at'].max():%Y-%m-%d} "
      f"({len(weeks)} weeks, mean {weeks.mean():.0f} a week), {demo['branch'].nunique()} branches, "
      f"{demo['channel'].nunique()} channels; escalation rate {demo['escalated'].mean():.1%}")
for head in ("category", "cause"):
    display(demo.groupby(head)["escalated"].agg(requests="count", escalation_rate="mean")
            .assign(share=lambda t: t["requests"] / len(demo)).sort_values("requests", ascending=False))

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
for ax, head in zip(axes, ("category", "cause")):
    counts = demo[head].value_counts().sort_values()
    rate = demo.groupby(head)["escalated"].mean().reindex(counts.index)
    ax.barh(counts.index, counts.values, color="#2f5d8a")
    for y, (n, r) in enumerate(zip(counts.values, rate.values)):
        ax.text(n, y, f" {r:.0%}", va="center", fontsize=8, color="#c0392b")
    ax.set_title(f"{head}: requests (bar) and escalation rate (red)")
    ax.set_xlabel("requests")
fig.tight_layout()

# %% [markdown]
# Weekly volume shows the weekday rhythm summed into weeks (holiday dips, a partial first and last week);
# the escalated part is what the alerts exist for. Text length ranges from one-line app feedback to formal
# letters: the features must work on both.

# %%
demo["length"] = demo["text"].str.len()
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
weekly = demo.set_index("received_at").resample("W-SUN")["escalated"].agg(["count", "sum"])
axes[0].bar(weekly.index, weekly["count"], width=5, color="#9aa5b1", label="all requests")
axes[0].bar(weekly.index, weekly["sum"], width=5, color="#c0392b", label="escalated")
axes[0].set_title("demo corpus: requests per week")
axes[0].legend()
bins = np.logspace(np.log10(max(demo["length"].min(), 1)), np.log10(demo["length"].max()), 40)
for flag, color in ((0, "#2f5d8a"), (1, "#c0392b")):
    axes[1].hist(demo.loc[demo["escalated"] == flag, "length"], bins=bins, alpha=0.6, color=color,
                 label=f"escalated={flag}")
axes[1].set_xscale("log")
axes[1].set_title("text length (characters, log scale)")
axes[1].legend()
fig.tight_layout()
demo.groupby("channel")["length"].describe()[["count", "25%", "50%", "75%", "max"]]

# %% [markdown]
# Channels and branches: regulator referrals (监管转办), 信访 and 媒体 are rare but escalate most, which is
# why the risk head reads the channel beside the text and why every 监管转办 referral raises an alert.
# Branch shares matter for the digest's branch ranking.

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [1, 2]})
for ax, col in zip(axes, ("channel", "branch")):
    g = demo.groupby(col)["escalated"].agg(["count", "mean"]).sort_values("count", ascending=False)
    ax.bar(g.index, g["count"], color="#2f5d8a")
    ax.set_ylabel("requests")
    ax.tick_params(axis="x", rotation=90)
    twin = ax.twinx()
    twin.plot(g.index, g["mean"], "o", color="#c0392b")
    twin.yaxis.set_major_formatter(PercentFormatter(1))
    twin.set_ylim(0, 1)
    twin.set_ylabel("escalation rate (red)")
    ax.set_title(f"demo corpus by {col}")
fig.tight_layout()
demo_channels = demo.groupby("channel")["escalated"].agg(requests="count", escalation_rate="mean")
demo_channels

# %% [markdown]
# ## CFPB (US, English): the public dispute benchmark
#
# `disputed` is the only public dispute label: the consumer disputed the company's response. It is the
# benchmark for the risk head (time split: train on 2015, test on 2016). The file has **no channel**;
# `state` is its regional unit, where our data has branches. Volume here is the narratives sampled into
# the file, not all complaints the CFPB received.

# %%
if cfpb_path is not None:
    cfpb = pd.read_csv(cfpb_path, parse_dates=["date_received"])
    cfpb["length"] = cfpb["text"].str.len()
    cfpb["words"] = cfpb["text"].str.split().str.len()
    by_year = cfpb.groupby(cfpb["date_received"].dt.year)["disputed"].agg(complaints="count", disputed_rate="mean")
    print(f"CFPB: {len(cfpb):,} complaints, {cfpb['date_received'].min():%Y-%m-%d} to "
          f"{cfpb['date_received'].max():%Y-%m-%d}, {cfpb['product'].nunique()} products, "
          f"{cfpb['state'].nunique()} states; disputed {cfpb['disputed'].mean():.1%}; "
          f"median {cfpb['length'].median():.0f} characters ({cfpb['words'].median():.0f} words)")
    display(by_year)
    display(cfpb.groupby("product")["disputed"].agg(complaints="count", disputed_rate="mean")
            .sort_values("complaints", ascending=False).assign(share=lambda t: t["complaints"] / len(cfpb)))

# %%
if cfpb_path is not None:
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    w = cfpb.set_index("date_received").resample("W-SUN")["disputed"].agg(["count", "sum"])
    axes[0, 0].bar(w.index, w["count"], width=5, color="#9aa5b1", label="complaints")
    axes[0, 0].bar(w.index, w["sum"], width=5, color="#c0392b", label="disputed")
    axes[0, 0].set_title("CFPB: complaints per week")
    axes[0, 0].legend()
    prod = cfpb.groupby("product")["disputed"].agg(["count", "mean"]).sort_values("count")
    axes[0, 1].barh(prod.index, prod["count"], color="#2f5d8a")
    for y, (n, r) in enumerate(zip(prod["count"], prod["mean"])):
        axes[0, 1].text(n, y, f" {r:.0%}", va="center", fontsize=8, color="#c0392b")
    axes[0, 1].set_title("product: complaints (bar) and disputed rate (red)")
    axes[1, 0].hist(cfpb["length"], bins=40, color="#2f5d8a")
    axes[1, 0].set_title("narrative length (characters)")
    states = cfpb.groupby("state")["disputed"].agg(["count", "mean"]).sort_values("count", ascending=False).head(15)
    axes[1, 1].bar(states.index, states["count"], color="#2f5d8a")
    twin = axes[1, 1].twinx()
    twin.plot(states.index, states["mean"], "o", color="#c0392b")
    twin.yaxis.set_major_formatter(PercentFormatter(1))
    twin.set_ylim(0, 0.5)
    axes[1, 1].set_title("15 largest states (no channel in CFPB): complaints and disputed rate")
    fig.tight_layout()

# %% [markdown]
# ## bank_dev beside the demo corpus
#
# `bank_dev` has our columns (`text, channel, category, cause, escalated`) but no branch or time. It is
# evaluated, never trained on. The open question: is its escalation rate different from the corpus's? The
# test below asks whether the demo corpus's rate could have produced bank_dev's count; the channel-adjusted
# rate asks what bank_dev's rate would be if each of its channels escalated as often as in the corpus, so
# that a difference in the channel mix is not taken for a difference in behaviour.

# %%
if bank_dev_path is not None:
    bank_dev = pd.read_csv(bank_dev_path, dtype={"id": str})
    bank_dev["length"] = bank_dev["text"].str.len()
    n, k = len(bank_dev), int(bank_dev["escalated"].sum())
    rate_demo = demo["escalated"].mean()
    test = binomtest(k, n, rate_demo)
    ci = test.proportion_ci(0.95)
    expected = bank_dev["channel"].map(demo_channels["escalation_rate"]).mean()
    print(f"bank_dev: {n} requests, {k} escalated = {k / n:.1%} (95% CI {ci.low:.1%} to {ci.high:.1%})")
    print(f"demo corpus: {rate_demo:.1%}; binomial test of bank_dev against it: p = {test.pvalue:.2f}")
    print(f"bank_dev's channel mix with the corpus's per-channel rates would give {expected:.1%}")
    per_channel = bank_dev.groupby("channel")["escalated"].agg(["sum", "count"])
    p_channel = {c: binomtest(int(r["sum"]), int(r["count"]), demo_channels.loc[c, "escalation_rate"]).pvalue
                 for c, r in per_channel.iterrows()}
    differ = [c for c, p in p_channel.items() if p < 0.05]
    print("channels whose bank_dev rate differs from the corpus's (binomial test, p < 0.05): "
          + (", ".join(f"{c} ({per_channel.loc[c, 'sum']}/{per_channel.loc[c, 'count']} vs "
                       f"{demo_channels.loc[c, 'escalation_rate']:.0%})" for c in differ) or "none"))
    if ci.low <= rate_demo <= ci.high:
        answer = ("the corpus's rate lies inside bank_dev's 95% interval: the base rates are not distinguishable "
                  "with 200 rows, so a base-rate shift alone does not explain the calibration gap")
        if differ:
            answer += "; but the channels listed above escalate differently, which a score calibrated on the corpus cannot know"
    else:
        answer = ("the corpus's rate lies outside bank_dev's 95% interval: bank_dev escalates at another rate, "
                  "which alone moves a score calibrated on the corpus off the diagonal")
    print(f"→ {answer}. Notebook 02 compares the scores with these rates.")
    compare = pd.concat({
        "demo share": demo["channel"].value_counts(normalize=True),
        "bank_dev share": bank_dev["channel"].value_counts(normalize=True),
        "demo escalation": demo_channels["escalation_rate"],
        "bank_dev escalation": bank_dev.groupby("channel")["escalated"].mean(),
        "bank_dev n": bank_dev["channel"].value_counts(),
        "p (bank_dev vs demo)": pd.Series(p_channel),
    }, axis=1).sort_values("demo share", ascending=False)
    display(compare)

# %%
if bank_dev_path is not None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    compare[["demo share", "bank_dev share"]].plot.bar(ax=axes[0], color=["#9aa5b1", "#2f5d8a"])
    axes[0].set_title("channel shares")
    axes[0].yaxis.set_major_formatter(PercentFormatter(1))
    compare[["demo escalation", "bank_dev escalation"]].plot.bar(ax=axes[1], color=["#9aa5b1", "#c0392b"])
    axes[1].set_title("escalation rate by channel (bank_dev: few rows per channel)")
    axes[1].yaxis.set_major_formatter(PercentFormatter(1))
    bins = np.logspace(1, np.log10(max(demo["length"].max(), bank_dev["length"].max())), 30)
    axes[2].hist(demo["length"], bins=bins, density=True, alpha=0.5, color="#9aa5b1", label="demo")
    axes[2].hist(bank_dev["length"], bins=bins, density=True, alpha=0.6, color="#2f5d8a", label="bank_dev")
    axes[2].set_xscale("log")
    axes[2].set_title("text length (characters)")
    axes[2].legend()
    fig.tight_layout()
    display(pd.DataFrame({"demo": demo["length"].describe(), "bank_dev": bank_dev["length"].describe()}).T)
    for head in ("category", "cause"):
        display(pd.concat({name: frame[head].value_counts(normalize=True)
                           for name, frame in (("demo share", demo), ("bank_dev share", bank_dev))}, axis=1).fillna(0))

# %% [markdown]
# ## What to take from this
#
# - The demo corpus's classes are all large enough to learn, but unequal: read per-class figures (notebook 02),
#   not accuracy alone.
# - Channel carries much of the escalation signal in the corpus; a set with another channel mix has another
#   base rate, and the risk score should follow it through the channel field.
# - CFPB is English and has no channel: it measures how far text alone goes on disputes, not our product.
# - The bank_dev comparison above says whether its escalation rate differs from the corpus's; notebook 02 shows
#   how the risk score's calibration fares on it.
