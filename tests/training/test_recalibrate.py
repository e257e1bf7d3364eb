"""`xiaobao recalibrate`: the risk probabilities and levels refitted on the bank's own outcomes, written as a
new version with a card saying where they came from, and promoted only if they are not calibrated worse."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from sklearn.model_selection import train_test_split

from models.registry import Registry
from training import cli as training_cli
from training.base import PromotionRefused
from training.data import load_dataset
from training.evaluate import levels_of
from training.fit import TrainParams
from training.pipeline import promote, train
from training.recalibrate import recalibrate
from xiaobao.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def parent(demo_corpus, tmp_path_factory):
    """A champion trained on 700 demo rows; the other rows are outcomes it never saw."""
    folder = tmp_path_factory.mktemp("recalibrate")
    corpus = pd.read_csv(demo_corpus, dtype=str, keep_default_na=False)
    rows = corpus.sample(700, random_state=5)
    path = folder / "train.csv"
    rows.to_csv(path, index=False)
    registry = Registry(folder / "registry")
    result = train(load_dataset(path), TrainParams(), registry)
    promote(registry, result.version)
    return registry.root, result.version, corpus.drop(rows.index).reset_index(drop=True)


@pytest.fixture
def registry(parent, tmp_path) -> Registry:
    """A private copy of the parent's registry: tests promote."""
    shutil.copytree(parent[0], tmp_path / "registry")
    return Registry(tmp_path / "registry")


@pytest.fixture
def pool(parent) -> pd.DataFrame:
    return parent[2]


def write(frame: pd.DataFrame, path):
    frame.to_csv(path, index=False)
    return path


def over_escalated(pool: pd.DataFrame, n: int = 300, seed: int = 1) -> pd.DataFrame:
    """The bank escalates more than the model believes: 40% of the calm outcomes became escalations."""
    frame = pool.sample(n, random_state=seed).reset_index(drop=True)
    calm = np.flatnonzero(frame["escalated"].to_numpy() == "0")
    flip = np.random.default_rng(seed).choice(calm, size=int(0.4 * len(calm)), replace=False)
    frame.loc[flip, "escalated"] = "1"
    return frame


def inverted(pool: pd.DataFrame, n: int = 300, seed: int = 2) -> pd.DataFrame:
    frame = pool.sample(n, random_state=seed).reset_index(drop=True)
    frame["escalated"] = np.where(frame["escalated"] == "1", "0", "1")
    return frame


def disagreeing(pool: pd.DataFrame, n: int = 300, positives: int = 100) -> tuple[pd.DataFrame, np.ndarray]:
    """Outcomes whose fitting rows contradict the model (calm texts marked escalated and the reverse) while
    the checking rows agree with it: a map fitted on the former is worse on the latter. The split is the
    stratified one `recalibrate` makes (it depends on the labels and the seed only)."""
    y = np.zeros(n, dtype=int)
    y[np.random.default_rng(0).choice(n, positives, replace=False)] = 1
    _, check = train_test_split(np.arange(n), test_size=0.3, random_state=0, stratify=y)
    hot = iter(pool[pool["escalated"] == "1"].sample(frac=1.0, random_state=0).to_dict("records"))
    calm = iter(pool[pool["escalated"] == "0"].sample(frac=1.0, random_state=0).to_dict("records"))
    in_check = np.isin(np.arange(n), check)
    rows = [next(hot) if (y[i] == 1) == in_check[i] else next(calm) for i in range(n)]
    frame = pd.DataFrame(rows)
    frame["escalated"] = y.astype(str)
    return frame, check


def served(bundle, frame: pd.DataFrame) -> list[dict]:
    return bundle.predict(frame["text"].tolist(), frame[["channel", "repeat_count", "amount"]], explain=False)


# --- a new version and its card ------------------------------------------------------------------------
def test_a_new_version_records_where_its_calibration_came_from(registry, pool, parent, tmp_path, capsys):
    _, parent_version, _ = parent
    data = write(over_escalated(pool), tmp_path / "outcomes.csv")
    before_versions = registry.versions()
    code, out, err = run(capsys, "recalibrate", "--model", "current", "--data", data, "--registry", registry.root)
    assert code == 0, err
    printed = json.loads(out)
    version = printed["version"]
    assert registry.versions() == sorted([*before_versions, version])
    assert registry.current() == parent_version  # not promoted unless asked

    card = registry.card(version)
    record = card["recalibration"]
    assert record["from"] == parent_version == printed["from"]
    escalated = int((pd.read_csv(data)["escalated"] == 1).sum())
    assert record["data"] | {"split": None} == {
        "file": str(data), "sha256": hashlib.sha256(data.read_bytes()).hexdigest(), "outcomes": 300,
        "escalated": escalated, "fit_rows": 210, "check_rows": 90, "split": None}
    a, b = record["calibrator"]["a"], record["calibrator"]["b"]
    assert a > 0 and b > 0  # more escalations than the model expected: probabilities are raised
    assert record["thresholds"]["before"] == registry.card(parent_version)["risk_thresholds"]
    assert record["thresholds"]["after"] == card["risk_thresholds"] != record["thresholds"]["before"]
    before, after = record["check"]["before"], record["check"]["after"]
    assert after["log_loss"] < before["log_loss"] and after["ece"] < before["ece"]
    assert after["roc_auc"] == before["roc_auc"]  # a monotone map leaves the ranking alone
    assert set(after["levels"]) == {"高", "中"}
    assert "outcomes.csv" in card["thresholds_from"] and "210 outcomes" in card["thresholds_from"]

    bundle = registry.load(version)
    assert bundle.risk_calibration == {"a": a, "b": b}  # the parent had none: nothing to compose
    assert bundle.risk_thresholds == card["risk_thresholds"]
    checked = pd.read_parquet(registry.resolve(version) / "validation.parquet")
    assert len(checked) == 90 and set(checked["text"]) <= set(pd.read_csv(data)["text"])


def test_predictions_move_by_the_map_and_keep_their_order(registry, pool, parent, tmp_path, capsys):
    _, parent_version, _ = parent
    data = write(over_escalated(pool), tmp_path / "outcomes.csv")
    code, out, err = run(capsys, "recalibrate", "--data", data, "--registry", registry.root)
    assert code == 0, err
    version = json.loads(out)["version"]
    cal = registry.card(version)["recalibration"]["calibrator"]
    texts = pool.sample(200, random_state=9)
    old = served(registry.load(parent_version), texts)
    new = served(registry.load(version), texts)
    s_old = np.array([p["risk"]["score"] for p in old])
    s_new = np.array([p["risk"]["score"] for p in new])
    assert np.allclose(s_new, expit(cal["a"] * logit(np.clip(s_old, 1e-6, 1 - 1e-6)) + cal["b"]), atol=2e-3)
    assert s_new.mean() > s_old.mean() + 0.05
    order = np.lexsort((s_new, s_old))  # by the old score (ties by the new): the new never goes down
    assert np.all(np.diff(s_new[order]) >= 0)
    thresholds = registry.load(version).risk_thresholds
    assert [p["risk"]["level"] for p in new] == levels_of(s_new, thresholds).tolist()
    for o, n in zip(old, new, strict=True):  # the text heads are the parent's, untouched
        assert (o["category"], o["cause"]) == (n["category"], n["cause"])


# --- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["few", "few escalated", "few calm"])
def test_too_few_outcomes_are_refused_with_the_counts(kind, registry, pool, tmp_path, capsys):
    if kind == "few":
        frame = pool.sample(80, random_state=0)
        expected = f"80 outcomes ({int((frame['escalated'] == '1').sum())} escalated)"
    else:
        hot, calm = pool[pool["escalated"] == "1"], pool[pool["escalated"] == "0"]
        frame = pd.concat([hot.head(5), calm.head(145)]) if kind == "few escalated" else \
            pd.concat([hot.head(145), calm.head(5)])
        expected = "150 outcomes (5 escalated)" if kind == "few escalated" else "150 outcomes (145 escalated)"
    versions = registry.versions()
    code, _, err = run(capsys, "recalibrate", "--data", write(frame, tmp_path / "o.csv"), "--registry", registry.root)
    assert code == 2 and expected in err, err
    assert "at least 100, with 10 or more of each outcome" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert registry.versions() == versions


def test_a_file_without_outcomes_is_refused(registry, pool, tmp_path, capsys):
    path = write(pool.head(200).drop(columns="escalated"), tmp_path / "no_outcomes.csv")
    code, _, err = run(capsys, "recalibrate", "--data", path, "--registry", registry.root)
    assert code == 2 and "no escalation outcome column" in err and err.count("\n") == 1
    code, _, err = run(capsys, "recalibrate", "--data", write(pool.head(200), tmp_path / "o.csv"),
                       "--risk-col", "outcome", "--registry", registry.root)
    assert code == 2 and "no column 'outcome'" in err


@pytest.mark.parametrize("argv,message", [
    (["--check-frac", "1"], "--check-frac must be between 0 and 1"),
    (["--check-frac", "0"], "--check-frac must be between 0 and 1"),
    (["--model", "v404"], "no model version 'v404'"),
    (["--check-frac", "0.99"], "--check-frac 0.99 leaves too few of each outcome"),
])
def test_bad_options_are_one_line_with_status_2(argv, message, registry, pool, tmp_path, capsys):
    data = write(pool.sample(100, random_state=3), tmp_path / "o.csv")
    code, _, err = run(capsys, "recalibrate", "--data", data, "--registry", registry.root, *argv)
    assert code == 2 and message in err and err.count("\n") == 1, err


# --- promotion ---------------------------------------------------------------------------------------------
def test_promote_when_the_checking_rows_are_not_worse(registry, pool, parent, tmp_path, capsys):
    data = write(over_escalated(pool), tmp_path / "outcomes.csv")
    code, out, err = run(capsys, "recalibrate", "--data", data, "--promote", "--registry", registry.root)
    assert code == 0, err
    printed = json.loads(out)
    promotion = printed["promotion"]
    assert promotion["promoted"] and not promotion["forced"] and promotion["previous"] == parent[1]
    assert promotion["criterion"] == "risk log-loss (lower is better)" and promotion["heads"] == ["risk"]
    assert promotion["challenger"]["log_loss"] <= promotion["champion"]["log_loss"]
    assert registry.current() == printed["version"]


def test_promotion_is_refused_when_calibrated_worse(registry, pool, parent, tmp_path, capsys):
    frame, check = disagreeing(pool)
    data = write(frame, tmp_path / "contradicting.csv")
    code, out, err = run(capsys, "recalibrate", "--data", data, "--promote", "--registry", registry.root)
    assert code == 3, err
    printed = json.loads(out)
    version = printed["version"]
    assert printed["promotion"]["promoted"] is False and printed["promotion"]["version"] == version
    assert err.count("\n") == 1 and "calibrated worse" in err and "--force" in err and version in err
    assert registry.current() == parent[1]  # the champion stays
    assert version in registry.versions()  # the refused version stays registered, for a look
    assert printed["calibrator"]["a"] < 0  # fitted on rows that say the opposite of the model
    stored = pd.read_parquet(registry.resolve(version) / "validation.parquet")
    assert set(stored["text"]) == set(frame["text"].iloc[check])  # judged on the rows that agree with the model

    code, out, err = run(capsys, "recalibrate", "--data", data, "--promote", "--force", "--registry", registry.root)
    assert code == 0, err
    forced = json.loads(out)
    assert forced["promotion"]["promoted"] and forced["promotion"]["forced"]
    assert registry.current() == forced["version"]


def test_a_second_recalibration_composes_and_is_judged_on_the_outcomes(registry, pool, tmp_path):
    good_path = write(over_escalated(pool), tmp_path / "good.csv")
    good = recalibrate(registry, "current", load_dataset(good_path, for_training=False))
    assert promote(registry, good.version)["promoted"]
    bad = recalibrate(registry, "current", load_dataset(write(inverted(pool), tmp_path / "bad.csv"),
                                                         for_training=False))
    assert bad.card["recalibration"]["from"] == good.version
    first, second = good.card["recalibration"]["calibrator"], bad.card["recalibration"]["calibrator"]
    composed = registry.load(bad.version).risk_calibration
    assert composed == pytest.approx({"a": second["a"] * first["a"], "b": second["a"] * first["b"] + second["b"]},
                                     abs=1e-5)
    texts = pool.sample(100, random_state=4)
    s_good = np.array([p["risk"]["score"] for p in served(registry.load(good.version), texts)])
    s_bad = np.array([p["risk"]["score"] for p in served(registry.load(bad.version), texts)])
    assert np.allclose(s_bad, expit(second["a"] * logit(np.clip(s_good, 1e-6, 1 - 1e-6)) + second["b"]), atol=2e-3)

    with pytest.raises(PromotionRefused, match="calibrated worse"):
        promote(registry, bad.version, data=load_dataset(good_path))
    assert registry.current() == good.version
    assert promote(registry, bad.version, data=load_dataset(good_path), force=True)["forced"]
    assert registry.current() == bad.version


# --- outcomes from the service's database --------------------------------------------------------------------
def test_help_offers_the_service_outcomes(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["recalibrate", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "--from-outcomes" in out and "--database-url" in out


def test_from_outcomes_keeps_the_exported_file_beside_the_registry(registry, pool, capsys):
    """The exporter is handed a path under <registry>/outcomes/; the card names the file it wrote."""
    source = over_escalated(pool)
    handed = []

    def export(args, out):
        handed.append(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        return write(source, out)

    parser = argparse.ArgumentParser()
    training_cli.register(parser.add_subparsers(dest="command"), export_outcomes=export)
    args = parser.parse_args(["recalibrate", "--from-outcomes", "--registry", str(registry.root)])
    args.func(args)
    printed = json.loads(capsys.readouterr().out)
    [path] = handed
    assert path.parent == registry.root / "outcomes" and re.fullmatch(r"outcomes-\d{8}T\d{6}Z\.csv", path.name)
    assert printed["data"]["file"] == str(path) and printed["data"]["outcomes"] == 300
    assert registry.card(printed["version"])["recalibration"]["data"]["sha256"] == \
        hashlib.sha256(path.read_bytes()).hexdigest()


def test_from_outcomes_without_a_service_is_a_clear_error(registry):
    args = argparse.Namespace(from_outcomes=True, registry=str(registry.root))
    with pytest.raises(training_cli.CliError, match="--from-outcomes needs the service's database"):
        training_cli.cmd_recalibrate(args, export_outcomes=None)


@pytest.fixture
def service_db(tmp_path, registry):
    from service.db import Database

    url = f"sqlite:///{tmp_path}/service.db"
    db = Database(url)
    db.upgrade()
    yield url, db
    db.dispose()


def test_recalibrate_from_the_outcomes_the_service_recorded(service_db, registry, pool, parent, capsys):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.auth import create_key
    from service.model_holder import ModelHolder
    from service.settings import Settings
    from tests.service.conftest import complaint_body

    url, db = service_db
    holder = ModelHolder(registry, probe_channel="电话客服")
    holder.reload()
    with db.transaction() as session:
        _, intake = create_key(session, "intake", "intake")
        _, protection = create_key(session, "protection", "protection")
    rows = pool.sample(130, random_state=8).reset_index(drop=True)
    app = create_app(Settings(database_url=url, registry=registry.root), database=db, model=holder)
    with TestClient(app) as client:
        results = []
        for start in range(0, len(rows), 65):
            items = [complaint_body(r) for _, r in rows.iloc[start:start + 65].iterrows()]
            r = client.post("/v1/complaints/batch", json={"items": items},
                            headers={"Authorization": f"Bearer {intake}"})
            assert r.status_code == 201, r.text[:300]
            results += r.json()["items"]
        for i, (result, (_, row)) in enumerate(zip(results, rows.iterrows(), strict=True)):
            if i % 13 == 0:
                continue  # no outcome recorded: not exported
            r = client.post(f"/v1/complaints/{result['id']}/outcome", json={"escalated": row["escalated"] == "1"},
                            headers={"Authorization": f"Bearer {protection}"})
            assert r.status_code == 201, r.text[:300]

    code, out, err = run(capsys, "recalibrate", "--from-outcomes", "--database-url", url, "--registry", registry.root)
    assert code == 0, err
    assert "read 120 requests with outcomes" in err
    printed = json.loads(out)
    record = registry.card(printed["version"])["recalibration"]
    kept = registry.root / "outcomes"
    [exported] = list(kept.glob("outcomes-*.csv"))
    assert record["data"]["file"] == str(exported) and record["from"] == parent[1]
    assert record["data"]["sha256"] == hashlib.sha256(exported.read_bytes()).hexdigest()
    truth = rows.drop(index=range(0, 130, 13))
    assert record["data"]["outcomes"] == 120 and record["data"]["escalated"] == int((truth["escalated"] == "1").sum())
    frame = pd.read_csv(exported, dtype=str, keep_default_na=False)
    assert sorted(frame["id"]) == sorted(truth["id"])


def test_from_an_empty_database_says_there_is_nothing(service_db, registry, capsys):
    url, _ = service_db
    versions = registry.versions()
    code, _, err = run(capsys, "recalibrate", "--from-outcomes", "--database-url", url, "--registry", registry.root)
    assert code == 2 and "no outcomes" in err and err.count("\n") == 1
    assert registry.versions() == versions
