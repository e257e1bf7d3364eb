"""The `xiaobao` model commands, run as a user would, in-process."""

import json

import pandas as pd
import pytest

from tests.conftest import shared_file
from xiaobao.cli import main


@pytest.fixture(scope="module")
def small_csv(demo_corpus, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "small.csv"
    pd.read_csv(demo_corpus).sample(500, random_state=2).to_csv(path, index=False)
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_promote_list_show_evaluate(tmp_path, small_csv, capsys):
    reg = tmp_path / "reg"
    code, out, err = run(capsys, "train", "--data", small_csv, "--registry", reg, "--promote", "--quiet")
    assert code == 0, err
    result = json.loads(out)
    assert result["promotion"]["promoted"]
    code, out, _ = run(capsys, "models", "list", "--registry", reg)
    assert out.startswith("* " + result["version"])
    code, out, _ = run(capsys, "models", "show", "current", "--registry", reg)
    assert json.loads(out)["version"] == result["version"]
    code, out, err = run(capsys, "evaluate", "--model", "current", "--data", small_csv, "--registry", reg, "--json")
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["n"] == 500 and set(metrics) >= {"category", "cause", "risk"}
    assert set(metrics["risk"]) >= {"roc_auc", "pr_auc", "ece"}


def test_predict_text_and_file(trained_registry, tmp_path, capsys):
    registry, _ = trained_registry
    code, out, _ = run(capsys, "predict", "--registry", registry.root, "--text", "信用卡年费乱收", "--json")
    assert code == 0 and json.loads(out)["category"]["label"] == "信用卡"
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "房贷提前还款违约金太高"}\n{"text": "ATM吞卡了"}\n', encoding="utf-8")
    out_path = tmp_path / "out.csv"
    code, _, err = run(capsys, "predict", "--registry", registry.root, "--data", data, "--out", out_path)
    assert code == 0, err
    table = pd.read_csv(out_path)
    assert list(table["row"]) == [1, 2] and {"pred_category", "risk_level", "needs_review"} <= set(table.columns)


def test_cv_prints_one_json_object(small_csv, capsys):
    code, out, err = run(capsys, "cv", "--data", small_csv, "--folds", "3", "--json", "--quiet")
    assert code == 0, err
    m = json.loads(out)
    assert m["protocol"]["kind"] == "stratified k-fold" and m["n"] == 500
    assert len(m["category"]["per_fold"]) == 3 and 0 < m["category"]["macro_f1"] <= 1
    assert "roc_auc" in m["risk"]


def test_cv_time_split(small_csv, capsys):
    code, out, err = run(capsys, "cv", "--data", small_csv, "--time-col", "received_at", "--test-from",
                         "2026-10-01", "--json", "--quiet")
    assert code == 0, err
    m = json.loads(out)
    assert m["protocol"] == {"kind": "time", "test_from": "2026-10-01"}
    assert 0 < m["n"] < 500


@pytest.mark.parametrize("argv,message", [
    (["train", "--data", "nope.csv"], "nope.csv: no such file"),
    (["train", "--data", "{small}", "--text-col", "body"], "no column 'body'"),
    (["train", "--data", "{small}", "--risk-col", "outcome"], "no column 'outcome'"),
    (["cv", "--data", "{small}", "--test-from", "2026-01-01"], "--test-from needs --time-col"),
    (["evaluate", "--model", "v404", "--data", "{small}", "--registry", "{reg}"], "no model version 'v404'"),
    (["models", "rollback", "--registry", "{reg}"], "no earlier champion"),
])
def test_bad_input_is_one_line_with_status_2(argv, message, small_csv, tmp_path, capsys):
    argv = [a.format(small=small_csv, reg=tmp_path / "reg") for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_one_class_label_names_the_column(tmp_path, capsys):
    path = tmp_path / "one.csv"
    pd.DataFrame({"text": ["年费", "利息", "手续费"], "category": ["信用卡"] * 3}).to_csv(path, index=False)
    code, _, err = run(capsys, "train", "--data", path, "--registry", tmp_path / "r")
    assert code == 2 and "column 'category' has only one class (信用卡)" in err


def test_skipped_rows_are_reported(tmp_path, small_csv, capsys):
    frame = pd.read_csv(small_csv)
    frame.loc[[3, 7], "text"] = ""
    path = tmp_path / "gaps.csv"
    frame.to_csv(path, index=False)
    code, _, err = run(capsys, "cv", "--data", path, "--folds", "2", "--json", "--quiet")
    assert code == 0
    assert "skipped 2 with empty text in 'text' (rows 5, 9)" in err


def test_evaluate_on_cfpb_english_with_feature_cols(tmp_path, capsys):
    """English text and foreign column names work end to end (a 1,500-row slice keeps it quick)."""
    src = shared_file("cfpb/complaints_2015_2016.csv")
    path = tmp_path / "cfpb.csv"
    pd.read_csv(src).sample(1500, random_state=0).to_csv(path, index=False)
    code, out, err = run(capsys, "cv", "--data", path, "--category-col", "product", "--cause-col", "",
                         "--risk-col", "disputed", "--feature-cols", "issue,state", "--folds", "3", "--json", "--quiet")
    assert code == 0, err
    m = json.loads(out)
    assert m["category"]["macro_f1"] > 0.4 and "roc_auc" in m["risk"]
