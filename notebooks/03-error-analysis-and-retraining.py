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
# # 03 · Worst errors, then the retraining loop end to end
#
# **For** the ML engineer who maintains the model and the 消保部 staff whose feedback trains it. First the
# current model's worst mistakes on requests it never trained on, with the phrases it based them on. Then the
# loop the product is built for, run for real on a copy: requests go through the service, the department
# records outcomes (`POST /v1/complaints/{id}/outcome`), `xiaobao export-labels` turns them into a training
# file, a challenger is trained on it, and `promote` compares challenger and champion on requests neither saw,
# promoting the challenger or refusing it.
#
# Nothing here touches your registry or database: the champion is copied into a temporary sandbox registry,
# the service runs in process on a temporary SQLite database, and the sandbox is deleted at the end.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(next(p for p in (Path.cwd(), Path.cwd() / "notebooks") if (p / "nbsupport.py").is_file())))
import nbsupport as nbs

import shutil
import tempfile
import time

import pandas as pd
from IPython.display import display
from sklearn.model_selection import train_test_split

from models.hashing import sha256_file
from models.registry import VALIDATION_FILE, Registry
from models.text import clean
from service.demo import in_process, last_weeks, replay
from service.settings import Settings
from training.data import load_dataset
from training.evaluate import predict_dataset
from training.fit import TrainParams
from training.pipeline import PromotionRefused, promote, train
from xiaobao.cli import main as xiaobao

pd.set_option("display.max_colwidth", 70)
pd.set_option("display.precision", 3)
started = time.perf_counter()
user_registry, folder, card, _ = nbs.champion()
champion = folder.name
sandbox = Path(tempfile.mkdtemp(prefix="xiaobao-notebook-03-"))
registry = Registry(sandbox / "registry")
shutil.copytree(folder, registry.versions_dir / champion)  # the card's hashes stay valid
registry.set_current(champion)
bundle = registry.load("current")  # verifies hash, size and library versions, then a test prediction
print(f"champion {champion} copied from {user_registry.root} into the sandbox {sandbox}")

# %% [markdown]
# The champion's training file is found from its card (and must still be the same file: the sha256 is
# checked), so that its validation rows — stored with their row numbers — can be matched to the full records
# (id, branch, time, customer) that the service needs.

# %%
source = Path(card["data"]["file"])
source = source if source.is_absolute() else nbs.ROOT / source
if not source.is_file() or sha256_file(source) != card["data"]["sha256"]:
    raise RuntimeError(f"{source} is not the file champion {champion} was trained on (missing or changed): "
                       "run `make train` first")
corpus = pd.read_csv(source, dtype=str, keep_default_na=False)
missing = {"id", "branch", "received_at"} - set(corpus.columns)
if missing:
    raise RuntimeError(f"{source} lacks {', '.join(sorted(missing))}: this notebook replays the demo corpus's columns")
stored = pd.read_parquet(folder / VALIDATION_FILE)
validation = corpus.loc[stored["row"].to_numpy() - 2].reset_index(drop=True)  # csv row n is frame index n - 2
training_rows = corpus.drop(index=stored["row"].to_numpy() - 2)
print(f"{source.name}: {len(corpus)} rows; the champion trained on {len(training_rows)}, "
      f"held out {len(validation)} (its validation split)")

# %% [markdown]
# ## The worst errors
#
# On the validation split, with explanations. *Most confident wrong* is where a reviewer would trust the model
# and should not; the phrases show what misled it (often a word typical of the other class). *Missed
# disputes* are escalated requests the model scored lowest: the alerts that never went out.

# %%
path = sandbox / "validation.csv"
validation.to_csv(path, index=False)
ds = load_dataset(path, for_training=False)
pred = predict_dataset(bundle, ds, explain=True)


def phrases(p: dict) -> str:
    return "、".join(x["phrase"] for x in p["phrases"])


errors = validation[["id", "channel", "category", "cause", "escalated"]].copy()
errors.insert(2, "text", [clean(t) for t in validation["text"]])  # shown masked, as the service stores it
for head in ("category", "cause"):
    errors[f"pred_{head}"] = [p[head]["label"] for p in pred]
    errors[f"p_{head}"] = [p[head]["probability"] for p in pred]
    errors[f"why_{head}"] = [phrases(p[head]) for p in pred]
errors["score"] = [p["risk"]["score"] for p in pred]
errors["level"] = [p["risk"]["level"] for p in pred]
errors["why_risk"] = [phrases(p["risk"]) for p in pred]
for head in ("category", "cause"):
    wrong = errors[errors[head] != errors[f"pred_{head}"]]
    print(f"{head}: {len(wrong)} of {len(errors)} wrong; the five the model was surest of:")
    display(wrong.nlargest(5, f"p_{head}")[["id", "text", head, f"pred_{head}", f"p_{head}", f"why_{head}"]])
disputes = errors[errors["escalated"] == "1"]
print(f"missed disputes: {(disputes['level'] == '低').sum()} of {len(disputes)} escalated requests scored 低; the five lowest:")
display(disputes.nsmallest(5, "score")[["id", "channel", "text", "score", "level", "why_risk"]])

# %%
confused = (errors[errors["cause"] != errors["pred_cause"]].groupby(["cause", "pred_cause"]).size()
            .sort_values(ascending=False).head(8).rename("requests").to_frame())
print("the cause pairs mixed up most often (true → predicted):")
confused

# %% [markdown]
# ## The loop: replay, feedback, export
#
# Half of the validation rows (stratified by category) stand for next month's requests: they go through the
# service, and the department answers each with an outcome — the corrected category and cause where the model
# was wrong, `confirmed` where it was right, and whether it escalated. The other half stays out of everything
# until the comparison, so that champion and challenger are judged on requests neither trained on.

# %%
feedback_rows, held_out = train_test_split(validation, test_size=0.5, random_state=0, stratify=validation["category"])
feedback_csv, held_out_csv = sandbox / "feedback.csv", sandbox / "held_out.csv"
feedback_rows.to_csv(feedback_csv, index=False)
held_out.to_csv(held_out_csv, index=False)
database_url = f"sqlite:///{sandbox / 'xiaobao.db'}"
settings = Settings(database_url=database_url, registry=registry.root, rate_limit_per_second=0)
truth = feedback_rows.set_index("id")
with in_process(settings) as (client, key):
    headers = {"Authorization": f"Bearer {key}"}
    report = replay(client, key, last_weeks(feedback_csv, weeks=10_000))  # every row, in time order
    stored_items = client.get("/v1/complaints", params={"limit": 500}, headers=headers).json()["items"]
    outcomes = {"confirmed": 0, "corrected": 0}
    for item in stored_items:
        row = truth.loc[item["external_id"]]
        body = {"escalated": row["escalated"] == "1"}
        if (item["category"], item["cause"]) == (row["category"], row["cause"]):
            body["confirmed"] = True
            outcomes["confirmed"] += 1
        else:
            body.update(category=row["category"], cause=row["cause"])
            outcomes["corrected"] += 1
        answer = client.post(f"/v1/complaints/{item['id']}/outcome", json=body, headers=headers)
        answer.raise_for_status()
print(f"replayed {report.sent} requests ({report.created} stored): {report.alerts} alerts, "
      f"{len(report.letters_issued)} letters (投诉风险提示函) issued")
print(f"outcomes recorded: {outcomes['confirmed']} confirmed, {outcomes['corrected']} corrected")

# %% [markdown]
# `xiaobao export-labels` writes every request with feedback in the demo corpus's columns; it is called here
# through the command line's own entry point, exactly as a user would run it.

# %%
labels_csv = sandbox / "labels.csv"
code = xiaobao(["export-labels", "--out", str(labels_csv), "--database-url", database_url])
assert code == 0, "export-labels failed"
labels = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
labels.head(3)

# %% [markdown]
# ## Challenger against champion
#
# The challenger trains on the champion's training rows plus the exported labels (as
# `xiaobao train --data combined.csv` would; 10% of that is split off to place its risk thresholds). Then
# `promote` scores both models on the held-out half — the same rows for both — and promotes the challenger
# only if its mean of category macro-F1, cause macro-F1 and risk ROC-AUC is not lower.

# %%
combined = sandbox / "combined.csv"
pd.concat([training_rows, labels], ignore_index=True).to_csv(combined, index=False)
held_out_ds = load_dataset(held_out_csv, for_training=False)


def challenge(version: str) -> dict:
    """promote() in the sandbox on the held-out rows; a refusal is an answer, not an error."""
    try:
        return promote(registry, version, data=held_out_ds)
    except PromotionRefused as refusal:
        print(f"PromotionRefused: {refusal}")
        return {"version": version, "promoted": False, "refusal": str(refusal)}


t0 = time.perf_counter()
challenger = train(load_dataset(combined), TrainParams(), registry, valid_frac=0.1)
print(f"challenger {challenger.version}: trained on {len(training_rows)} + {len(labels)} rows "
      f"in {time.perf_counter() - t0:.0f} s")
first = challenge(challenger.version)
print(f"decision: {'PROMOTED' if first['promoted'] else 'REFUSED'} — sandbox champion is now {registry.current()}")
if "challenger" in first:  # promote() reports each model's score per head on the held-out rows
    display(pd.DataFrame({"challenger": first["challenger"], "champion": first["champion"]}))

# %% [markdown]
# The comparison is only as good as the held-out rows: a few hundred requests move macro-F1 by a point or two
# by chance. Promotion needs the challenger not to be worse on the mean; a refusal keeps the champion serving.
# To see the guard work, a deliberately weak challenger — trained on a quarter of the champion's training rows,
# without the feedback — is offered next. It must be refused.

# %%
weak_csv = sandbox / "weak.csv"
training_rows.sample(frac=0.25, random_state=0).to_csv(weak_csv, index=False)
weak = train(load_dataset(weak_csv), TrainParams(), registry)
second = challenge(weak.version)
print(f"weak challenger {weak.version}: {'PROMOTED' if second['promoted'] else 'REFUSED'}; "
      f"sandbox champion stays {registry.current()}")

# %% [markdown]
# Outside this notebook the same loop is three commands (the service running, outcomes recorded through the
# API or the console):
#
# ```bash
# xiaobao export-labels --out labels.csv
# xiaobao train --data labels.csv              # or a file that joins the old training rows and labels.csv
# xiaobao models promote VERSION --data held_out.csv   # refuses a worse challenger unless --force
# ```

# %%
assert user_registry.current() == champion, "the user's registry changed"
shutil.rmtree(sandbox)
print(f"your registry still serves {user_registry.current()}; sandbox removed; "
      f"notebook body took {time.perf_counter() - started:.0f} s")
