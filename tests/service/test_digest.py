"""The digest's figures on small hand-built data, on SQLite and PostgreSQL: volumes and changes,
breakdowns, branch ranking, high-risk status, letters, the 15/30/60-day rule, PSI, rising phrases."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from service.digest.build import (
    NO_REFERENCE,
    Reference,
    build_digest,
    change,
    content_hash,
    psi,
    rising_phrases,
)
from service.digest.weeks import Week, WeekError, last_complete_week, parse_week
from tests.service.digest_data import ZONE, alert, at, complaint, letter

W20 = Week(2026, 20, ZONE)  # Monday 2026-05-11 to Sunday 2026-05-17
AFTER = at("2026-05-18 08:00")


def _digest(db, week: Week = W20, reference: Reference = NO_REFERENCE, now: datetime = AFTER):
    with db.reading() as s:
        return build_digest(s, week, reference=reference, now=now)


def _add(db, *rows) -> None:
    with db.transaction() as s:
        s.add_all(rows)


# --- weeks ------------------------------------------------------------------------------------
def test_iso_weeks_are_local_monday_to_monday():
    w = parse_week("2026-W20", ZONE)
    assert (w.start, w.end) == (at("2026-05-11 00:00"), at("2026-05-18 00:00"))
    assert w.start.tzinfo is not None and w.start.astimezone(UTC).hour == 16  # Sunday 16:00 UTC
    assert w.shift(-1).label == "2026-W19" and w.shift(-20).label == "2025-W52"
    assert parse_week("2026-W53", ZONE).last_year().label == "2025-W52"  # 2025 has no week 53
    assert Week(2026, 1, ZONE).monday == date(2025, 12, 29)
    assert last_complete_week(at("2026-05-18 08:00"), ZONE).label == "2026-W20"
    assert last_complete_week(at("2026-05-17 23:59"), ZONE).label == "2026-W19"
    berlin = Week(2026, 13, ZoneInfo("Europe/Berlin"))  # clocks go forward on Sunday 29 March
    assert berlin.end - berlin.start == timedelta(days=7, hours=-1)


@pytest.mark.parametrize("text, message", [
    ("2026-20", "not an ISO week"), ("2026-W5", "not an ISO week"), ("W20-2026", "not an ISO week"),
    ("2025-W53", "W01 to W52"), ("2026-W00", "W01 to W53"), ("2026-W20", None),
    # blanks are refused as the API schema's pattern says, not read as the week (or, alone, as the default)
    ("2026-W20 ", "not an ISO week"), ("\x0c", "not an ISO week"), ("2026-W20\n", "not an ISO week"),
])
def test_malformed_weeks_are_refused(text, message):
    if message is None:
        assert parse_week(text, ZONE).label == "2026-W20"
        return
    with pytest.raises(WeekError, match=message):
        parse_week(text, ZONE)


def test_a_week_that_has_not_begun_is_refused():
    with pytest.raises(WeekError, match="future"):
        parse_week("2026-W21", ZONE, now=at("2026-05-17 23:59"))
    assert parse_week("2026-W21", ZONE, now=at("2026-05-18 00:00")).label == "2026-W21"  # the running week


# --- volume, changes, breakdowns --------------------------------------------------------------
def test_volume_week_on_week_year_on_year_and_breakdowns(db):
    this_week = [
        complaint("2026-05-11 00:00", branch="城东支行", category="信用卡", level="高", score=0.95),
        complaint("2026-05-12 09:00", branch="城东支行", category="信用卡", level="高", score=0.85),
        complaint("2026-05-13 09:00", branch="城西支行", category="个人贷款", cause="债务催收方式和手段",
                  channel="营业网点", level="中", score=0.55),
        complaint("2026-05-14 09:00", branch="城西支行", category="借记卡", cause="服务态度及服务质量",
                  channel="手机银行"),
        complaint("2026-05-15 09:00", branch="营业部", channel="微信公众号"),
        complaint("2026-05-17 23:59", branch="营业部", category=None, cause=None),
    ]
    previous = [complaint(f"2026-05-{d:02d} 10:00", branch="营业部") for d in (4, 6, 8)] + [
        complaint("2026-05-10 23:59", branch="城西支行", category="个人贷款")]
    last_year = [complaint(f"2025-05-{d} 10:00") for d in (12, 13, 14)]  # 2025-W20
    outside = [complaint("2026-05-18 00:00"), complaint("2025-05-11 23:00")]  # next week; 2025-W19
    _add(db, *this_week, *previous, *last_year, *outside)
    d = _digest(db)
    assert d.week == "2026-W20" and d.complete
    v = d.volume
    assert v.this_week == 6
    assert (v.week_on_week.previous, v.week_on_week.change, v.week_on_week.change_pct) == (4, 2, 50.0)
    assert (v.year_on_year.previous, v.year_on_year.change, v.year_on_year.change_pct) == (3, 3, 100.0)
    assert v.year_on_year.note is None
    assert [w.week for w in v.trend][-3:] == ["2026-W18", "2026-W19", "2026-W20"] and len(v.trend) == 12
    assert [(w.count, w.high_risk) for w in v.trend][-2:] == [(4, 0), (6, 2)]
    cats = {r.label: r for r in d.categories}
    assert (cats["信用卡"].count, cats["信用卡"].previous, cats["信用卡"].high_risk) == (3, 3, 2)
    assert cats["信用卡"].share == pytest.approx(0.5) and d.categories[0].label == "信用卡"
    assert cats["未分类"].count == 1 and cats["个人贷款"].previous == 1
    assert sum(r.count for r in d.causes) == 6 and {r.label: r.count for r in d.channels}["电话客服"] == 3
    ranks = [(r.rank, r.branch, r.count, r.previous, r.high_risk) for r in d.branches]
    assert ranks == [(1, "城东支行", 2, 0, 2), (2, "城西支行", 2, 1, 0), (3, "营业部", 2, 3, 0)]


def test_year_on_year_is_null_with_a_reason_when_last_year_has_no_data(db):
    _add(db, complaint("2026-05-04 10:00"), complaint("2026-05-12 10:00"))
    v = _digest(db).volume
    assert v.year_on_year.previous is None and v.year_on_year.change_pct is None
    assert "2025-W20" in v.year_on_year.note and "2026-05-04" in v.year_on_year.note
    assert v.week_on_week.change_pct == 0.0


def test_changes_from_zero_and_from_nothing():
    assert change(5, 0).change_pct is None and change(5, 0).note
    assert change(3, None, "无数据").note == "无数据"
    assert change(60, 100).change_pct == -40.0


def test_an_empty_database_gives_an_empty_digest(db):
    d = _digest(db)
    assert d.volume.this_week == 0 and d.volume.year_on_year.change_pct is None
    assert d.categories == [] and d.branches == [] and d.high_risk.total == 0
    assert d.letters.sent == 0 and d.letters.overdue == 0 and d.handling.median_days is None
    assert d.topics.items == [] and d.model_health.psi is None and d.model_health.needs_review_share is None


# --- high-risk requests and letters -----------------------------------------------------------
def test_high_risk_requests_with_their_alert_and_letter(db):
    acked = letter(1, "2026-05-11 10:00", ack_due="2026-05-14 00:00", response_due="2026-05-27 00:00",
                   acknowledged="2026-05-12 09:00")
    _add(db,
         complaint("2026-05-11 09:00", level="高", score=0.97, closed="2026-05-13 21:00", alert=alert(letter_row=acked),
                   text="客户138****5678反映年费多扣"),
         complaint("2026-05-12 09:00", level="高", score=0.91, alert=alert("个人信贷部")),
         complaint("2026-05-13 09:00", level="高", score=0.88),
         complaint("2026-05-14 09:00", level="中", score=0.6),
         complaint("2026-05-04 09:00", level="高", score=0.99))  # last week
    hr = _digest(db).high_risk
    assert (hr.total, hr.with_alert, hr.with_letter, hr.closed) == (3, 2, 1, 1)
    first, second, third = hr.items
    assert [i.risk_score for i in hr.items] == [0.97, 0.91, 0.88]
    assert (first.status, first.letter_number, first.letter_status, first.alert_status) == (
        "closed", "〔2026〕第0001号", "acknowledged", "open")
    assert first.excerpt == "客户138****5678反映年费多扣"
    assert (second.department, second.letter_number, second.status) == ("个人信贷部", None, "open")
    assert third.alert_id is None and third.department is None


def test_letters_sent_acknowledged_and_overdue(db):
    _add(db,
         # issued and acknowledged this week
         letter(1, "2026-05-11 10:00", ack_due="2026-05-14 00:00", response_due="2026-05-27 00:00",
                acknowledged="2026-05-12 09:00"),
         # last week's, never acknowledged: its acknowledgement deadline has passed
         letter(2, "2026-05-04 10:00", department="个人信贷部", ack_due="2026-05-07 00:00",
                response_due="2026-05-20 00:00"),
         # acknowledged, but the response deadline passed without resolution
         letter(3, "2026-04-20 10:00", ack_due="2026-04-23 00:00", response_due="2026-05-06 00:00",
                acknowledged="2026-04-21 09:00"),
         # acknowledged late, during this week, and resolved this week: nothing overdue at the end
         letter(4, "2026-04-20 11:00", ack_due="2026-04-23 00:00", response_due="2026-05-06 00:00",
                acknowledged="2026-05-12 10:00", resolved="2026-05-15 10:00"),
         # acknowledged only after the week: overdue at the week's end
         letter(5, "2026-05-08 10:00", ack_due="2026-05-12 00:00", response_due="2026-05-24 00:00",
                acknowledged="2026-05-19 10:00"),
         # issued after the week: not in it at all
         letter(6, "2026-05-18 09:00", ack_due="2026-05-10 00:00"))
    L = _digest(db).letters
    assert (L.sent, L.acknowledged, L.resolved) == (1, 2, 1)
    assert (L.overdue, L.overdue_ack, L.overdue_response) == (3, 2, 1)
    assert [(r.number[-5:], r.overdue) for r in L.overdue_items] == [
        ("0003号", "response"), ("0002号", "ack"), ("0005号", "ack")]
    depts = {r.department: (r.sent, r.acknowledged, r.overdue) for r in L.by_department}
    assert depts == {"信用卡中心": (1, 2, 2), "个人信贷部": (0, 0, 1)}


# --- handling time and the 15/30/60-day rule --------------------------------------------------
def test_handling_time_and_the_15_day_share(db):
    _add(db,
         # the cohort whose 15-day deadline falls in W20: received 26 April to 2 May, local dates
         complaint("2026-04-27 10:00", closed="2026-05-10 10:00"),           # 13 days: in time
         complaint("2026-04-28 10:00", closed="2026-05-14 10:00"),           # 16 days: late
         complaint("2026-05-01 08:00", closed="2026-05-16 20:00"),           # 15.5 days, day 15: in time
         complaint("2026-05-02 23:30"),                                      # open: late
         complaint("2026-05-03 00:30", closed="2026-05-05 10:00"),           # 2 May in UTC, 3 May locally
         complaint("2026-04-25 23:59", closed="2026-05-13 12:00"),           # before the cohort
         # closed this week
         complaint("2026-05-04 09:00", closed="2026-05-13 21:00"),           # 9.5 days
         complaint("2026-05-11 09:00", closed="2026-05-13 21:00"),           # 2.5 days
         complaint("2026-05-15 09:00", closed="2026-05-18 09:00"))           # closed after the week
    h = _digest(db).handling
    assert (h.due, h.due_closed_within_15) == (4, 2) and h.closed_within_15_share == pytest.approx(0.5)
    # closed in W20: 16.0, 15.5, 17.5 (the 25 April one), 9.5, 2.5 days
    assert h.closed == 5 and h.median_days == pytest.approx(15.5)
    assert h.closed_this_week_within_15_share == pytest.approx(3 / 5)  # 15.5 counts: its 15th day


def test_open_cases_by_age_and_those_about_to_miss_their_deadline(db):
    _add(db,
         complaint("2026-05-04 10:00"),                            # day 15 is 19 May: due soon (15)
         complaint("2026-04-19 10:00", branch="城西支行"),           # past 15; day 30 is 19 May: due soon (30)
         complaint("2026-03-20 10:00"),                            # past 30; day 60 is 19 May: due soon (60)
         complaint("2026-05-06 10:00"),                            # day 15 is 21 May: not yet
         complaint("2026-05-03 10:00", closed="2026-05-10 10:00"),  # closed
         complaint("2026-05-03 10:00"),                            # day 15 is 18 May: due soon
         complaint("2026-05-02 10:00"),                            # day 15 was 17 May: overdue
         complaint("2026-02-01 10:00"),                            # past 60
         complaint("2026-05-12 10:00", closed="2026-05-19 10:00"))  # open at the week's end
    h = _digest(db).handling
    assert h.open_total == 8
    assert (h.open_over_15, h.open_over_30, h.open_over_60) == (4, 2, 1)
    soon = [(i.received_at.astimezone(ZONE).date().isoformat(), i.deadline_days, i.due_date.isoformat())
            for i in h.due_soon]
    assert soon == [("2026-05-03", 15, "2026-05-18"), ("2026-05-04", 15, "2026-05-19"),
                    ("2026-04-19", 30, "2026-05-19"), ("2026-03-20", 60, "2026-05-19")]
    assert h.due_soon_total == 4
    assert h.due_soon[0].due_at == at("2026-05-19 00:00")  # the end of 18 May


def test_branch_15_day_figures(db):
    _add(db,
         complaint("2026-04-27 10:00", branch="城东支行", closed="2026-05-05 10:00"),
         complaint("2026-04-28 10:00", branch="城东支行", closed="2026-05-20 10:00"),
         complaint("2026-04-28 10:00", branch="城西支行"),
         complaint("2026-05-12 10:00", branch="城西支行", level="高", score=0.9))
    rows = {r.branch: r for r in _digest(db).branches}
    east, west = rows["城东支行"], rows["城西支行"]
    assert (east.count, east.due, east.closed_within_15, east.open_over_15) == (0, 2, 1, 1)
    assert east.closed_within_15_share == pytest.approx(0.5)
    assert (west.rank, west.count, west.high_risk, west.due, west.closed_within_15_share, west.open_over_15) == (
        1, 1, 1, 1, 0.0, 1)


# --- model health -----------------------------------------------------------------------------
def test_psi_on_known_distributions():
    assert psi([0.1] * 10, [0.1] * 10) == 0.0
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4 * math.log(0.5 / 0.9) * -1 + 0.4 * math.log(5))
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.8789, abs=1e-4)
    assert psi([5, 5], [9, 1]) == pytest.approx(psi([0.5, 0.5], [0.9, 0.1]))  # counts are normalised
    assert psi([1.0, 0.0], [0.5, 0.5]) == pytest.approx(0.5 * math.log(2) + (1e-4 - 0.5) * math.log(1e-4 / 0.5))
    with pytest.raises(ValueError):
        psi([1.0], [0.5, 0.5])


def test_model_health_psi_drift_and_needs_review(db):
    reference = Reference("v-test", [0.5, 0.2, 0.1, 0.05, 0.05, 0.03, 0.03, 0.02, 0.01, 0.01])
    scores = [0.05] * 10 + [0.95] * 20 + [1.0] * 5  # 35 scores, mostly high: a shifted distribution
    _add(db, *[complaint("2026-05-12 10:00", score=s, needs_review=i < 7) for i, s in enumerate(scores)],
         complaint("2026-05-12 10:00", score=None, version="v-old"))
    m = _digest(db, reference=reference).model_health
    assert m.scored == 35
    assert m.histogram[0] == pytest.approx(10 / 35, abs=1e-4)
    assert m.histogram[9] == pytest.approx(25 / 35, abs=1e-4)
    assert m.psi == pytest.approx(psi([10, 0, 0, 0, 0, 0, 0, 0, 0, 25], reference.histogram), abs=1e-4)
    assert m.psi > 0.2 and m.drift
    assert m.needs_review == 7 and m.needs_review_share == pytest.approx(7 / 36, abs=1e-4)
    assert [(v.version, v.count) for v in m.versions] == [("v-test", 35), ("v-old", 1)]
    assert "其他版本" in m.note


def test_model_health_is_stable_on_the_reference_and_quiet_on_small_samples(db):
    reference = Reference("v-test", [0.1] * 10)
    _add(db, *[complaint("2026-05-12 10:00", score=(i % 10) / 10 + 0.05) for i in range(40)])
    m = _digest(db, reference=reference).model_health
    assert m.psi == pytest.approx(0.0, abs=1e-9) and not m.drift
    _add(db, *[complaint("2026-05-05 10:00", score=0.99) for _ in range(5)])  # W19: 5 scores, all high
    m = _digest(db, W20.shift(-1), reference=reference).model_health
    assert m.psi > 0.2 and not m.drift and "少于" in m.note
    assert _digest(db, reference=NO_REFERENCE).model_health.psi is None


# --- emerging topics --------------------------------------------------------------------------
def test_rising_phrases_need_a_minimum_count_and_ignore_noise(db):
    baseline = []
    for week_start in ("2026-04-13", "2026-04-20", "2026-04-27", "2026-05-04"):
        for i in range(5):
            phrases = ["客服"] + (["年费"] if i == 0 and week_start == "2026-04-20" else [])
            baseline.append(complaint(f"{week_start} 1{i}:00", phrases=phrases + ["还款"]))
    this_week = [complaint(f"2026-05-1{1 + i % 5} 10:00",
                           phrases=(["年费", "年费"] if i < 6 else []) + (["客服"] if i < 5 else [])
                           + (["新词"] if i < 2 else []) + (["的是", "15"] if i < 5 else []))
                 for i in range(10)]
    _add(db, *baseline, *this_week)
    t = _digest(db).topics
    phrases = [r.phrase for r in t.items]
    assert phrases[0] == "年费"
    top = t.items[0]
    assert (top.count, top.baseline_weekly) == (6, 0.25)  # counted once per request, not per head
    assert top.lift == pytest.approx(((6 + 1) / (10 + 1)) / ((1 + 1) / (20 + 1)), abs=0.01)
    assert "客服" not in phrases  # named by all 20 requests before and by half of them now: not rising
    assert "新词" not in phrases  # 2 requests: below the minimum count
    assert "的是" not in phrases and "15" not in phrases  # not words a reader takes for a topic
    assert "还款" not in phrases  # gone this week


def test_rising_phrase_ranking_prefers_a_surge_to_a_few_mentions():
    rows = [("理财", 3, 0), ("年费", 30, 40), ("客服", 12, 40)]
    ranked = rising_phrases(rows, n_current=100, n_baseline=400)
    assert [r.phrase for r in ranked] == ["年费", "理财"]  # 客服: 12 vs 10 expected, lift 1.2 < 1.5
    assert ranked[0].score > ranked[1].score and ranked[1].lift > ranked[0].lift
    assert rising_phrases(rows, n_current=100, n_baseline=0) == []


def test_topics_say_why_they_are_empty(db):
    _add(db, complaint("2026-05-12 10:00", phrases=["年费"]))
    assert "前 4 周无数据" in _digest(db).topics.note


def test_content_hash_ignores_the_generation_time(db):
    _add(db, complaint("2026-05-12 10:00"))
    a, b = _digest(db, now=AFTER), _digest(db, now=AFTER + timedelta(days=3))
    assert a.generated_at != b.generated_at and content_hash(a) == content_hash(b)
    _add(db, complaint("2026-05-13 10:00"))
    assert content_hash(_digest(db)) != content_hash(a)


def test_alert_watch_rates_against_the_card_recall_precision_and_missed_disputes(db):
    from service.tables import ComplaintOutcome

    reference = Reference("v-test", None, {"高": 0.1, "中": 0.3})
    high = [complaint("2026-05-12 10:00", level="高", score=0.9, alert=alert()) for _ in range(20)]
    medium = [complaint("2026-05-12 11:00", level="中", score=0.5) for _ in range(10)]
    low = [complaint("2026-05-13 09:00", level="低", score=0.05) for _ in range(10)]
    earlier = complaint("2026-04-01 09:00", level="低", score=0.31, text="第三次来电，仍未解决")  # in the window
    too_old = complaint("2026-01-05 09:00", level="低", score=0.2)  # before the 12 weeks
    _add(db, *high, *medium, *low, earlier, too_old)
    outcomes = ([ComplaintOutcome(complaint=c, escalated=True) for c in high[:15]]
                + [ComplaintOutcome(complaint=c, escalated=False) for c in high[15:]]
                + [ComplaintOutcome(complaint=medium[0], escalated=True),
                   ComplaintOutcome(complaint=low[0], escalated=True), ComplaintOutcome(complaint=low[1], escalated=False),
                   # the latest outcome that says counts: first yes, then no
                   ComplaintOutcome(complaint=low[2], escalated=True), ComplaintOutcome(complaint=low[2], escalated=False),
                   ComplaintOutcome(complaint=low[3], escalated=None, note="回访"),
                   ComplaintOutcome(complaint=earlier, escalated=True),
                   ComplaintOutcome(complaint=too_old, escalated=True)])
    _add(db, *outcomes)
    w = _digest(db, reference=reference).alert_watch
    by = {r.level: r for r in w.levels}
    assert (by["高"].raised, by["中"].raised) == (20, 30)
    assert by["高"].rate == pytest.approx(0.5) and by["高"].expected_rate == 0.1 and by["高"].off
    assert by["中"].rate == pytest.approx(0.75) and by["中"].off
    # Outcomes known for 20 high, 1 medium, 3 low (low[3] said nothing) and the earlier one: 25, of which 18 escalated.
    assert (w.outcomes, w.escalated) == (25, 18)
    assert by["高"].outcomes_alerted == 20
    assert by["高"].recall == pytest.approx(15 / 18, abs=1e-4) and by["高"].precision == pytest.approx(15 / 20)
    assert by["中"].recall == pytest.approx(16 / 18, abs=1e-4) and by["中"].precision == pytest.approx(16 / 21, abs=1e-4)
    # 漏报: escalated and no alert, highest score first; the one from before the window is not listed.
    assert [m.external_id for m in w.missed] == [medium[0].external_id, earlier.external_id, low[0].external_id]
    assert w.missed_total == 3 and w.missed[1].excerpt.startswith("第三次来电")
    assert "模型卡预期" in w.note


def test_alert_watch_says_why_it_cannot_judge(db):
    _add(db, complaint("2026-05-12 10:00", level="高", score=0.9))
    w = _digest(db).alert_watch
    assert w.outcomes == 0 and w.missed == [] and all(r.recall is None and r.precision is None for r in w.levels)
    assert all(r.expected_rate is None and not r.off for r in w.levels)
    assert "expected_alert_rates" in w.note and "升级结果" in w.note
