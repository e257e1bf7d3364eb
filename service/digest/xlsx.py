"""The digest as an Excel workbook: one sheet per section, native Excel charts beside the data
(they stay editable and render with the reader's own fonts)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.chart import BarChart, LineChart, Reference
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from service.digest.schema import BreakdownRow, WeeklyDigest
from service.digest.wording import OVERDUE_KINDS, title
from service.vocab import RiskLevel, label

SHEETS = ("概览", "趋势", "业务大类", "投诉原因", "渠道", "网点排名", "高风险投诉", "提示函", "办理时效",
          "新兴话题", "模型健康")
HEADER_FILL = PatternFill("solid", fgColor="DCE6F0")
BOLD = Font(bold=True)
PERCENT = "0.0%"


class _Writer:
    def __init__(self, digest: WeeklyDigest) -> None:
        self.d = digest
        self.zone = ZoneInfo(digest.timezone)

    def time(self, value: datetime | None) -> datetime | None:
        # Excel has no time zones: local wall-clock time, as the bank reads it.
        return None if value is None else value.astimezone(self.zone).replace(tzinfo=None)

    def table(self, ws: Worksheet, top: int, headers: Sequence[str], rows: Iterable[Sequence[Any]],
              formats: dict[int, str] | None = None) -> int:
        """Writes a header and rows from row `top`; returns the last row written."""
        for col, name in enumerate(headers, start=1):
            cell = ws.cell(row=top, column=col, value=name)
            cell.font, cell.fill = BOLD, HEADER_FILL
        r = top
        for r, row in enumerate(rows, start=top + 1):
            for col, value in enumerate(row, start=1):
                cell = ws.cell(row=r, column=col, value=value)
                if cell.data_type == "f":  # text from outside ("=HYPERLINK(…)") stays text, never a formula
                    cell.data_type = "s"
                if isinstance(value, datetime):
                    cell.number_format = "yyyy-mm-dd hh:mm"
                elif formats and col in formats:
                    cell.number_format = formats[col]
        return r

    @staticmethod
    def widths(ws: Worksheet, widths: Sequence[int]) -> None:
        for i, w in enumerate(widths, start=1):
            ws.column_dimensions[get_column_letter(i)].width = w
        ws.freeze_panes = None


def _bar(title_: str, ws: Worksheet, label_col: int, data_cols: Sequence[int], top: int, bottom: int,
         horizontal: bool = True, height: float = 9.0) -> BarChart:
    chart = BarChart()
    chart.type = "bar" if horizontal else "col"
    chart.title = title_
    chart.height, chart.width = height, 18
    chart.legend.position = "b"
    for col in data_cols:
        chart.add_data(Reference(ws, min_col=col, min_row=top, max_row=bottom), titles_from_data=True)
    chart.set_categories(Reference(ws, min_col=label_col, min_row=top + 1, max_row=bottom))
    if horizontal:
        chart.y_axis.majorGridlines = None
        chart.x_axis.scaling.orientation = "maxMin"  # largest on top, as in the table
    return chart


def workbook(digest: WeeklyDigest) -> Workbook:
    w = _Writer(digest)
    d = digest
    wb = Workbook()
    sheets = {name: (wb.active if i == 0 else wb.create_sheet(name)) for i, name in enumerate(SHEETS)}
    sheets["概览"].title = "概览"

    # 概览
    ws = sheets["概览"]
    ws["A1"] = title(d)
    ws["A1"].font = Font(bold=True, size=14)
    v, h = d.volume, d.handling
    rows: list[tuple[str, Any]] = [
        ("统计区间（开始）", w.time(d.start)), ("统计区间（结束，不含）", w.time(d.end)), ("时区", d.timezone),
        ("生成时间", w.time(d.generated_at)), ("本周已结束", "是" if d.complete else "否"),
        ("本周投诉量", v.this_week), ("上周投诉量", v.week_on_week.previous),
        ("环比（%）", v.week_on_week.change_pct), ("环比说明", v.week_on_week.note),
        ("上年同期投诉量", v.year_on_year.previous), ("同比（%）", v.year_on_year.change_pct),
        ("同比说明", v.year_on_year.note), ("高风险投诉", d.high_risk.total),
        ("提示函：本周发出", d.letters.sent), ("提示函：本周签收", d.letters.acknowledged),
        ("提示函：逾期", d.letters.overdue), ("本周办结", h.closed), ("办结中位用时（天）", h.median_days),
        ("15日内办结率（本周到期）", h.closed_within_15_share), ("周末未办结", h.open_total),
        ("超15日未办结", h.open_over_15), ("3日内到期", h.due_soon_total),
        ("PSI", d.model_health.psi), ("分布漂移", "是" if d.model_health.drift else "否"),
        ("需人工复核占比", d.model_health.needs_review_share),
    ]
    last = w.table(ws, 3, ["指标", "数值"], rows)
    for r in range(4, last + 1):
        if ws.cell(row=r, column=1).value in ("15日内办结率（本周到期）", "需人工复核占比"):
            ws.cell(row=r, column=2).number_format = PERCENT
    w.widths(ws, [28, 28])
    ws.cell(row=last + 2, column=1, value="投诉内容均已脱敏。")

    # 趋势
    ws = sheets["趋势"]
    last = w.table(ws, 1, ["周", "投诉量", "高风险"], [(t.week, t.count, t.high_risk) for t in v.trend])
    chart = _bar("近12周投诉量", ws, 1, [2], 1, last, horizontal=False)
    line = LineChart()
    line.add_data(Reference(ws, min_col=3, min_row=1, max_row=last), titles_from_data=True)
    chart += line
    ws.add_chart(chart, "E2")
    w.widths(ws, [12, 10, 10])

    # 业务大类 / 投诉原因 / 渠道
    def breakdown(ws: Worksheet, heading: str, items: list[BreakdownRow], with_chart: bool) -> None:
        last = w.table(ws, 1, [heading, "本周", "占比", "上周", "高风险"],
                       [(r.label, r.count, r.share, r.previous, r.high_risk) for r in items], {3: PERCENT})
        w.widths(ws, [28, 8, 8, 8, 8])
        if with_chart and items:
            ws.add_chart(_bar(f"{heading}（本周 / 上周）", ws, 1, [2, 4], 1, last,
                              height=max(6.0, 0.7 * len(items) + 2)), "G2")

    breakdown(sheets["业务大类"], "业务大类", d.categories, True)
    breakdown(sheets["投诉原因"], "投诉原因", d.causes, True)
    breakdown(sheets["渠道"], "渠道", d.channels, False)

    # 网点排名
    ws = sheets["网点排名"]
    last = w.table(ws, 1, ["排名", "网点", "本周投诉", "上周", "高风险", "本周到期", "15日内办结", "15日办结率",
                           "超15日未结"],
                   [(r.rank, r.branch, r.count, r.previous, r.high_risk, r.due, r.closed_within_15,
                     r.closed_within_15_share, r.open_over_15) for r in d.branches], {8: PERCENT})
    w.widths(ws, [6, 18, 10, 8, 8, 10, 10, 10, 10])
    if d.branches:
        ws.add_chart(_bar("网点投诉量（本周）", ws, 2, [3, 5], 1, min(last, 16), height=10), "K2")

    # 高风险投诉
    ws = sheets["高风险投诉"]
    ws["A1"] = (f"本周高风险投诉 {d.high_risk.total} 件；已预警 {d.high_risk.with_alert}，"
                f"已发提示函 {d.high_risk.with_letter}，已办结 {d.high_risk.closed}")
    w.table(ws, 3, ["编号", "接收时间", "网点", "渠道", "业务大类", "投诉原因", "风险分", "状态", "预警状态", "部门",
                    "提示函", "提示函状态", "内容摘要（已脱敏）"],
            [(r.external_id, w.time(r.received_at), r.branch, r.channel, r.category, r.cause, r.risk_score,
              label(r.status, "complaint"), label(r.alert_status, "alert"),
              r.department, r.letter_number, label(r.letter_status, "letter"), r.excerpt)
             for r in d.high_risk.items], {7: "0.00"})
    w.widths(ws, [14, 17, 14, 10, 12, 20, 8, 8, 10, 16, 16, 10, 60])

    # 提示函
    ws = sheets["提示函"]
    L = d.letters
    last = w.table(ws, 1, ["指标", "数值"], [("本周发出", L.sent), ("本周签收", L.acknowledged), ("本周办结", L.resolved),
                                          ("逾期（周末）", L.overdue), ("未按时签收", L.overdue_ack),
                                          ("超过办理期限", L.overdue_response),
                                          ("无法投递的消息（生成时）", L.undeliverable)])
    last = w.table(ws, last + 2, ["部门", "本周发出", "本周签收", "逾期"],
                   [(r.department, r.sent, r.acknowledged, r.overdue) for r in L.by_department])
    w.table(ws, last + 2, ["文号", "部门", "发出时间", "签收期限", "办理期限", "状态", "逾期情形"],
            [(r.number, r.department, w.time(r.issued_at), w.time(r.ack_due_at), w.time(r.response_due_at),
              label(r.status, "letter"), OVERDUE_KINDS.get(r.overdue, r.overdue))
             for r in L.overdue_items])
    w.widths(ws, [18, 16, 17, 17, 17, 10, 14])

    # 办理时效
    ws = sheets["办理时效"]
    last = w.table(ws, 1, ["指标", "数值"], [
        ("本周办结", h.closed), ("办结中位用时（天）", h.median_days),
        ("本周办结中15日内占比", h.closed_this_week_within_15_share), ("本周到期（15日）", h.due),
        ("其中15日内办结", h.due_closed_within_15), ("15日内办结率", h.closed_within_15_share),
        ("周末未办结", h.open_total), ("超15日", h.open_over_15), ("超30日", h.open_over_30),
        ("超60日", h.open_over_60), ("3日内到期", h.due_soon_total)])
    for r in (5, 8):
        ws.cell(row=r, column=2).number_format = PERCENT
    w.table(ws, last + 2, ["编号", "网点", "业务大类", "接收时间", "已用天数", "期限（日）", "到期日（日终）", "内容摘要（已脱敏）"],
            [(r.external_id, r.branch, r.category, w.time(r.received_at), r.age_days, r.deadline_days,
              r.due_date, r.excerpt) for r in h.due_soon])
    w.widths(ws, [22, 14, 12, 17, 10, 10, 17, 60])

    # 新兴话题
    ws = sheets["新兴话题"]
    T = d.topics
    last = w.table(ws, 1, ["短语", "本周投诉数", f"前{T.baseline_weeks}周周均", "提升倍数", "排序分"],
                   [(r.phrase, r.count, r.baseline_weekly, r.lift, r.score) for r in T.items])
    if T.note:
        ws.cell(row=last + 2, column=1, value=T.note)
    w.widths(ws, [18, 12, 12, 10, 10])

    # 模型健康
    ws = sheets["模型健康"]
    M = d.model_health
    last = w.table(ws, 1, ["指标", "数值"], [
        ("本周评分", M.scored), ("PSI", M.psi), ("阈值", M.psi_threshold), ("分布漂移", "是" if M.drift else "否"),
        ("参考模型", M.reference_version), ("需人工复核", M.needs_review), ("需人工复核占比", M.needs_review_share),
        ("说明", M.note)])
    ws.cell(row=8, column=2).number_format = PERCENT
    top = last + 2
    ref = M.reference_histogram or [None] * len(M.histogram)
    bottom = w.table(ws, top, ["风险分区间", "本周占比", "训练参考占比"],
                     [(f"{i / 10:.1f}–{(i + 1) / 10:.1f}", a, e) for i, (a, e) in enumerate(zip(M.histogram, ref,
                                                                                              strict=True))],
                     {2: PERCENT, 3: PERCENT})
    ws.add_chart(_bar("风险评分分布", ws, 1, [2, 3], top, bottom, horizontal=False), "E2")
    last = w.table(ws, bottom + 2, ["评分模型版本", "件数"], [(r.version, r.count) for r in M.versions])
    W = d.alert_watch
    last = w.table(ws, last + 2, ["预警级别", "本周件数", "本周占比", "模型卡预期", "偏离预期", "已知结果中预警",
                                  "召回率", "精确率"],
                   [(r.level if r.level == RiskLevel.HIGH else f"{r.level}及以上", r.raised, r.rate, r.expected_rate,
                     "是" if r.off else "否", r.outcomes_alerted, r.recall, r.precision) for r in W.levels],
                   {3: PERCENT, 4: PERCENT, 7: PERCENT, 8: PERCENT})
    ws.cell(row=last + 1, column=1, value=f"召回率、精确率：{w.time(W.outcomes_from)} 起收到、已记录升级结果 "
                                          f"{W.outcomes} 件（升级 {W.escalated} 件）；漏报 {W.missed_total} 件")
    if W.note:
        ws.cell(row=last + 2, column=1, value=W.note)
    w.table(ws, last + 4, ["漏报：编号", "收到时间", "网点", "渠道", "类别", "原因", "风险级别", "风险分", "摘要"],
            [(r.external_id, w.time(r.received_at), r.branch, r.channel, r.category, r.cause, r.risk_level,
              r.risk_score, r.excerpt) for r in W.missed])
    w.widths(ws, [18, 24, 14])
    return wb
