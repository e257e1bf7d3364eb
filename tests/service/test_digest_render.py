"""The digest rendered: HTML with embedded PNG charts, plain text, xlsx, JSON; charts without
missing glyphs whether or not a Chinese font is installed."""

from __future__ import annotations

import base64
import io
import json
import re
import warnings

import openpyxl
import pytest

from service.digest import charts
from service.digest.build import Reference, build_digest
from service.digest.render import FORMATS, render, to_html, to_text
from service.digest.schema import WeeklyDigest
from service.digest.weeks import Week
from service.digest.xlsx import SHEETS
from tests.service.digest_data import ZONE, alert, at, complaint, letter

W20 = Week(2026, 20, ZONE)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def digest(db) -> WeeklyDigest:
    late = letter(1, "2026-05-04 10:00", ack_due="2026-05-07 00:00", response_due="2026-05-20 00:00")
    rows = [complaint(f"2026-05-{11 + i % 7:02d} 10:00", branch=("城东支行", "营业部", "城西支行")[i % 3],
                      category=("信用卡", "个人贷款", "借记卡")[i % 3], level="高" if i < 3 else "低",
                      score=0.9 if i < 3 else 0.1, phrases=["年费"] if i < 4 else ["客服"],
                      text="客户138****5678反映年费多扣，要求退还" if i == 0 else "咨询信用卡分期",
                      alert=alert(letter_row=late) if i == 0 else None)
            for i in range(12)]
    rows += [complaint(f"2026-05-{4 + i % 7:02d} 10:00", phrases=["客服"]) for i in range(8)]
    rows += [complaint("2026-05-02 10:00")]  # open past its 15 days
    with db.transaction() as s:
        s.add_all(rows)
    with db.reading() as s:
        return build_digest(s, W20, reference=Reference("v-test", [0.1] * 10), now=at("2026-05-18 08:00"))


def test_html_is_chinese_print_ready_with_embedded_png_charts(digest):
    html = to_html(digest)
    assert html.startswith("<!DOCTYPE html>") and 'lang="zh-CN"' in html and "@media print" in html
    assert "投诉处理周报 2026-W20（2026年05月11日 至 05月17日）" in html
    for heading in ("一、总体情况", "三、网点排名", "四、高风险投诉及处置情况", "五、投诉风险提示函",
                    "六、办理时效", "七、新兴话题", "八、模型健康"):
        assert heading in html
    images = re.findall(r'<img class="chart" alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert [alt for alt, _ in images] == ["近12周投诉量趋势", "业务大类", "投诉原因", "网点投诉量排名", "风险评分分布"]
    for _, data in images:
        assert base64.b64decode(data).startswith(PNG)
    assert "客户138****5678反映年费多扣" in html and "〔2026〕第0001号" in html and "未按时签收" in html


def test_html_escapes_what_it_shows(db):
    with db.transaction() as s:
        s.add(complaint("2026-05-12 10:00", branch="<script>alert(1)</script>", level="高", score=0.9,
                        text="<b>年费</b>"))
    with db.reading() as s:
        html = to_html(build_digest(s, W20, now=at("2026-05-18 08:00")))
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;年费" in html


def test_plain_text_has_every_section_and_the_figures(digest):
    text = to_text(digest)
    assert text.startswith("投诉处理周报 2026-W20")
    for heading in ("一、总体情况", "二、业务大类、投诉原因与渠道", "三、网点排名", "四、高风险投诉及处置情况",
                    "五、投诉风险提示函", "六、办理时效", "七、新兴话题", "八、模型健康"):
        assert heading in text
    assert "本周投诉量  12 件（高风险 3 件）" in text
    assert "环比        +50.00%（上周 8 件）" in text
    assert "1. 年费" in text and "〔2026〕第0001号" in text
    assert "<" not in text  # no markup


def test_xlsx_has_a_sheet_per_section_and_charts(digest):
    wb = openpyxl.load_workbook(io.BytesIO(render(digest, "xlsx")))
    assert wb.sheetnames == list(SHEETS)
    overview = {row[0]: row[1] for row in wb["概览"].iter_rows(min_row=4, values_only=True) if row[0]}
    assert overview["本周投诉量"] == 12 and overview["上周投诉量"] == 8 and overview["环比（%）"] == 50.0
    assert overview["提示函：逾期"] == 1
    branches = list(wb["网点排名"].iter_rows(min_row=2, values_only=True))
    assert [r[1] for r in branches][:3] == [r.branch for r in digest.branches][:3]
    assert wb["高风险投诉"]["A4"].value == digest.high_risk.items[0].external_id
    trend = list(wb["趋势"].iter_rows(min_row=2, values_only=True))
    assert len(trend) == 12 and trend[-1] == ("2026-W20", 12, 3)
    for name in ("趋势", "业务大类", "投诉原因", "网点排名", "模型健康"):
        assert len(wb[name]._charts) == 1, name
    assert wb["新兴话题"]["A2"].value == "年费"


def test_statuses_read_as_the_console_reads_them(digest):
    """The digest's labels are the console's (service.vocab): an issued letter 待签收, an open alert
    待处理, an open request 未办结, in HTML, text and xlsx alike."""
    html, text = to_html(digest), to_text(digest)
    assert "未办结<br>预警待处理</td>" in html and "〔2026〕第0001号<br>待签收</td>" in html
    assert "<td>待签收</td><td class=\"warn\">未按时签收</td>" in html
    assert "〔2026〕第0001号 待签收" in text
    wb = openpyxl.load_workbook(io.BytesIO(render(digest, "xlsx")))
    first = next(wb["高风险投诉"].iter_rows(min_row=4, max_row=4, values_only=True))
    assert (first[7], first[8], first[11]) == ("未办结", "待处理", "待签收")
    overdue = [row for row in wb["提示函"].iter_rows(values_only=True) if row[0] == "〔2026〕第0001号"]
    assert overdue and overdue[0][5:7] == ("待签收", "未按时签收")


def test_json_round_trips_through_the_schema(digest):
    data = json.loads(render(digest, "json"))
    assert WeeklyDigest.model_validate(data) == digest
    assert data["volume"]["week_on_week"]["change_pct"] == 50.0 and data["week"] == "2026-W20"
    assert set(FORMATS) == {"json", "html", "text", "xlsx"}
    with pytest.raises(ValueError, match="unknown format"):
        render(digest, "pdf")


def _glyph_warnings(digest) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pngs = charts.all_charts(digest)
    assert set(pngs) == {"trend", "categories", "causes", "branches", "scores"}
    assert all(p.startswith(PNG) for p in pngs.values())
    return [str(w.message) for w in caught if "missing from" in str(w.message)]


def test_charts_show_no_missing_glyphs(digest):
    """With a Chinese font the labels are Chinese; either way no character renders as a box."""
    assert _glyph_warnings(digest) == []
    if charts.cjk_font() is not None:
        assert charts._labels(["信用卡"]) == ["信用卡"]


def test_without_a_chinese_font_charts_fall_back_to_numbers(digest, monkeypatch):
    monkeypatch.setattr(charts, "cjk_font", lambda: None)
    assert charts._labels(["信用卡", "借记卡"]) == ["#1", "#2"]
    assert _glyph_warnings(digest) == []
    assert "本机未安装中文字体" in to_html(digest)
