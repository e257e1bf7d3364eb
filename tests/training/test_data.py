import json

import pandas as pd
import pytest

from training.data import Columns, DataError, load_dataset

ROWS = [
    {"text": "信用卡年费被扣了两次", "category": "信用卡", "cause": "定价收费", "escalated": 0, "channel": "手机银行"},
    {"text": "催收电话打到我单位", "category": "信用卡", "cause": "债务催收方式和手段", "escalated": 1, "channel": "电话客服"},
    {"text": "房贷提前还款要排队三个月", "category": "个人贷款", "cause": "管理制度、业务规则与流程", "escalated": 0,
     "channel": "营业网点"},
    {"text": "理财亏了本金没人解释", "category": "自营理财", "cause": "产品收益", "escalated": 1, "channel": "信访"},
]


def write(tmp_path, rows, name="data.csv", **kwargs):
    path = tmp_path / name
    frame = pd.DataFrame(rows)
    if name.endswith(".csv"):
        frame.to_csv(path, index=False, **kwargs)
    elif name.endswith(".jsonl"):
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif name.endswith(".xlsx"):
        frame.to_excel(path, index=False)
    elif name.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("name", ["data.csv", "data.jsonl", "data.xlsx", "data.parquet"])
def test_every_format_reads_the_same(tmp_path, name):
    ds = load_dataset(write(tmp_path, ROWS, name))
    assert ds.texts == [r["text"] for r in ROWS]
    assert ds.heads == ["category", "cause", "risk"]
    assert ds.frame["risk"].tolist() == [0, 1, 0, 1]
    assert ds.features == ["channel"]


def test_gbk_csv_from_excel_is_read(tmp_path):
    ds = load_dataset(write(tmp_path, ROWS, encoding="gb18030"))
    assert ds.texts[0] == "信用卡年费被扣了两次"


def test_missing_text_column_names_file_and_columns(tmp_path):
    path = write(tmp_path, [{k: v for k, v in r.items() if k != "text"} for r in ROWS])
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert str(err.value).startswith(str(path))
    assert "no column 'text'" in str(err.value) and "category" in str(err.value)


def test_empty_text_rows_are_skipped_and_reported_by_row(tmp_path):
    rows = [*ROWS, {**ROWS[0], "text": "   "}, {**ROWS[1], "text": ""}]
    ds = load_dataset(write(tmp_path, rows))
    assert len(ds) == 4
    summary = ds.skipped_summary()
    assert "2 with empty text in 'text'" in summary and "rows 6, 7" in summary


def test_every_text_empty_is_an_error(tmp_path):
    with pytest.raises(DataError, match="every row has empty text"):
        load_dataset(write(tmp_path, [{**r, "text": ""} for r in ROWS]))


def test_unreadable_file(tmp_path):
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"this is not a spreadsheet")
    with pytest.raises(DataError, match=r"broken.xlsx: cannot read as xlsx"):
        load_dataset(path)


def test_unsupported_and_absent_files(tmp_path):
    with pytest.raises(DataError, match="unsupported file type .txt"):
        load_dataset(tmp_path / "x.txt")
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "x.csv")


def test_label_column_with_one_class_is_an_error(tmp_path):
    rows = [{**r, "escalated": 0} for r in ROWS]
    with pytest.raises(DataError, match=r"column 'escalated' has only one class \(0\)"):
        load_dataset(write(tmp_path, rows))


def test_bad_risk_value_names_row_and_column(tmp_path):
    rows = [*ROWS[:2], {**ROWS[2], "escalated": "maybe"}, ROWS[3]]
    with pytest.raises(DataError, match=r"row 4, column 'escalated': 'maybe' is not a 0/1 outcome"):
        load_dataset(write(tmp_path, rows))


def test_risk_accepts_chinese_and_boolean_words(tmp_path):
    rows = [{**r, "escalated": v} for r, v in zip(ROWS, ["否", "是", "false", "TRUE"], strict=True)]
    assert load_dataset(write(tmp_path, rows)).frame["risk"].tolist() == [0, 1, 0, 1]


def test_explicit_label_column_missing_is_an_error_default_is_not(tmp_path):
    path = write(tmp_path, [{k: v for k, v in r.items() if k != "cause"} for r in ROWS])
    assert load_dataset(path).heads == ["category", "risk"]
    with pytest.raises(DataError, match="no column 'reason'"):
        load_dataset(path, Columns(cause="reason", explicit=frozenset({"cause"})))


def test_several_text_columns_are_joined(tmp_path):
    rows = [{**r, "title": f"标题{i}"} for i, r in enumerate(ROWS)]
    ds = load_dataset(write(tmp_path, rows), Columns(text=("title", "text")))
    assert ds.texts[0] == "标题0\n信用卡年费被扣了两次"


def test_missing_structured_field_is_unknown_when_predicting(tmp_path):
    path = write(tmp_path, [{k: v for k, v in r.items() if k != "channel"} for r in ROWS])
    ds = load_dataset(path, Columns(features=("channel", "amount"), explicit=frozenset({"features"})),
                      for_training=False)
    assert ds.features == []


def test_explicit_structured_field_missing_when_training(tmp_path):
    path = write(tmp_path, ROWS)
    with pytest.raises(DataError, match="no column 'amount'"):
        load_dataset(path, Columns(features=("channel", "amount"), explicit=frozenset({"features"})))


def test_unparseable_time_names_the_row(tmp_path):
    rows = [{**r, "received_at": f"2026-03-0{i + 1}"} for i, r in enumerate(ROWS)]
    rows[2]["received_at"] = "yesterday"
    with pytest.raises(DataError, match=r"row 4, column 'received_at': 'yesterday' is not a date"):
        load_dataset(write(tmp_path, rows), Columns(time="received_at"))


def test_multilabel_category(tmp_path):
    rows = [{"text": t, "codes": c} for t, c in [("发动机异响", "A,B"), ("变速箱顿挫", "B"), ("车漆起泡", "H")]]
    ds = load_dataset(write(tmp_path, rows), Columns(category="codes", multilabel_sep=",",
                                                     explicit=frozenset({"category"})))
    assert ds.multilabel and ds.frame["category"].tolist() == [["A", "B"], ["B"], ["H"]]


def test_jsonl_row_numbers_are_line_numbers(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in ROWS]
    lines[1] = json.dumps({**ROWS[1], "escalated": "x"}, ensure_ascii=False)
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DataError, match="row 2, column 'escalated'"):
        load_dataset(path)
