"""The check a corpus writer runs on new parts: labels the corpus knows, openings not overused, the
length and escalation shares of the brief, and one line per problem."""

from __future__ import annotations

import json

import pytest

from training import check_parts
from training.demo_corpus import PARTS

MEDIUM = "卡里的钱转不出去，网点让我等通知，等到现在也没有任何人回电话，这件事拖得太久了"
GOOD = [  # three short, four medium, three long; three escalated; ten openings
    {"text": text, "channel": "电话客服", "category": "借记卡", "cause": "管理制度、业务规则与流程",
     "escalated": int(i in (0, 4, 8)), "repeat_count": 0, "amount": None}
    for i, text in enumerate(["卡被锁了到底怎么解开呀", "借记卡补办都要带什么证件", "短信提醒在哪里可以关掉",
                              "甲：" + MEDIUM, "乙：" + MEDIUM, "丙：" + MEDIUM, "丁：" + MEDIUM,
                              "戊：" + MEDIUM * 4, "己：" + MEDIUM * 4, "庚：" + MEDIUM * 4])
]


def errors_of(paths):
    return check_parts.check(paths)[0]


@pytest.fixture
def part(monkeypatch, tmp_path):
    """Writes rows as a part in a parts folder beside the real ones (read for labels and openings)."""
    folder = tmp_path / "parts"
    folder.mkdir()
    monkeypatch.setattr(check_parts, "PARTS", folder)

    def write(rows, name="new_01.jsonl"):
        path = folder / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return path
    return write


def test_rows_written_as_the_brief_asks_pass(part):
    assert errors_of([part(GOOD)]) == []


def test_each_problem_is_named_with_its_file_and_line(part):
    rows = list(GOOD)
    rows[1] = {**rows[1], "category": "信用卡中心"}
    rows[2] = {**rows[2], "cause": "态度差"}
    rows[4] = {k: v for k, v in rows[4].items() if k != "amount"}
    path = part(rows)
    errors = errors_of([path])
    assert f"{path}:2: unknown category '信用卡中心'" in errors
    assert f"{path}:3: unknown cause '态度差'" in errors
    assert any(e.startswith(f"{path}:5: fields must be exactly") for e in errors)


def test_overused_and_banned_openings_are_refused(part):
    same = [{**row, "text": "我想问问" + row["text"]} for row in GOOD]
    assert "10 rows start with '我想问问' (3 at most)" in errors_of([part(same)])
    banned = [{**row, "text": "客户来电" + row["text"]} if i == 0 else row for i, row in enumerate(GOOD)]
    assert any("'客户来电', an opening WRITING_BRIEF_2.md bans" in e for e in errors_of([part(banned)]))


def test_a_text_an_existing_part_already_has_is_a_duplicate(part):
    existing = json.loads((PARTS / "polite_01.jsonl").read_text(encoding="utf-8").splitlines()[0])["text"]
    rows = [{**GOOD[3], "text": existing}] + GOOD[:3] + GOOD[4:]
    path = part(rows)
    assert f"{path}:1: duplicate text" in errors_of([path])


def test_templated_lengths_and_escalation_shares_are_reported(part):
    same = [{**row, "text": row["text"][:2] + MEDIUM, "escalated": 1} for row in GOOD]
    errors = errors_of([part(same)])
    assert any(e.startswith("lengths: 0% under 40 and 0% over 150") for e in errors)
    assert "escalated share 100% (aim: about 30%)" in errors


def test_the_command_line_says_one_line_per_problem(part, capsys):
    assert check_parts.main([str(part(GOOD))]) == 0
    assert "10 rows in 1 file(s): no problem found" in capsys.readouterr().out
    assert check_parts.main([str(PARTS / "no-such-part.jsonl")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: no such file")
