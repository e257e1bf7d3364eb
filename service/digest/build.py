"""Assemble the 投诉处理周报 from the aggregated figures: changes, shares, PSI, rising phrases.

The database does the counting (service.digest.queries); this module does the arithmetic on a few
hundred numbers at most, so a week of 10,000 requests costs the same here as a week of ten.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from models.levels import ALERT_LEVELS
from service.digest import queries as q
from service.digest.schema import (
    AlertWatch,
    BranchRow,
    BreakdownRow,
    Change,
    DeadMessage,
    DepartmentLetters,
    DueItem,
    Handling,
    HighRisk,
    HighRiskItem,
    LetterRow,
    Letters,
    LevelWatch,
    MissedItem,
    ModelHealth,
    TopicRow,
    Topics,
    VersionCount,
    Volume,
    WeekCount,
    WeeklyDigest,
)
from service.digest.weeks import Week
from service.tables import Complaint

TREND_WEEKS = 12
PSI_THRESHOLD = 0.2  # the usual reading: < 0.1 stable, 0.1-0.2 watch, > 0.2 shifted
PSI_MIN_SAMPLE = 30  # fewer scores than this make PSI noise: reported, never flagged
PSI_FLOOR = 1e-4  # an empty bin would make PSI infinite
TOPIC_BASELINE_WEEKS = 4
TOPIC_MIN_COUNT = 3
TOPIC_MIN_LIFT = 1.5
TOPIC_PSEUDO_COUNT = 1.0
TOPIC_LIMIT = 10
OUTCOME_WEEKS = 12  # outcomes arrive weeks after a request: alerts are judged over this window
RATE_BAND = (2 / 3, 3 / 2)  # a level's weekly rate outside this band around the expected one is flagged


@dataclass(frozen=True)
class Reference:
    """The served model's training score histogram (10 equal-width bins over [0, 1])."""

    version: str | None
    histogram: list[float] | None
    # Share of requests at or above each level the model card expects (scored on held-out writers).
    expected_alert_rates: dict[str, float] | None = None

    @classmethod
    def from_bundle(cls, bundle: Any) -> Reference:
        meta = getattr(bundle, "meta", {}) or {}
        return cls(getattr(bundle, "version", None), meta.get("risk_reference_histogram"),
                   meta.get("expected_alert_rates"))

    @classmethod
    def from_registry(cls, registry: Any) -> Reference:
        """From the current version's card, without unpickling the bundle (the worker has no model)."""
        from models.registry import ModelLoadError

        try:
            version = registry.current()
            card = registry.card("current") if version else {}
        except ModelLoadError:
            return cls(None, None)
        return cls(version, card.get("risk_reference_histogram"), card.get("expected_alert_rates"))


NO_REFERENCE = Reference(None, None)


# --- arithmetic -------------------------------------------------------------------------------
def psi(actual: list[float], expected: list[float], floor: float = PSI_FLOOR) -> float:
    """Population stability index of two binned distributions (shares, or counts: both are normalised)."""
    if len(actual) != len(expected) or not actual:
        raise ValueError("PSI needs two histograms with the same bins")
    a_total, e_total = sum(actual), sum(expected)
    if a_total <= 0 or e_total <= 0:
        raise ValueError("PSI needs two non-empty histograms")
    out = 0.0
    for a, e in zip(actual, expected, strict=True):
        a, e = max(a / a_total, floor), max(e / e_total, floor)
        out += (a - e) * math.log(a / e)
    return out


def change(current: int, previous: int | None, missing_note: str | None = None) -> Change:
    if previous is None:
        return Change(current=current, previous=None, change=None, change_pct=None, note=missing_note)
    if previous == 0:
        return Change(current=current, previous=0, change=current, change_pct=None,
                      note="上期为 0，变化率无法计算")
    return Change(current=current, previous=previous, change=current - previous,
                  change_pct=round((current - previous) / previous * 100, 2))


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@functools.cache
def _segmenter():
    from models.text import Segmenter

    return Segmenter()


def is_topic(phrase: str) -> bool:
    """A phrase a reader can take as a topic: words of two characters or more, not digits, not stop
    words. The model's explanations also name character pairs across words (的是, 户反), which a
    topic list must not show."""
    if not any(c.isalpha() for c in phrase):
        return False
    tokens = _segmenter().cut(phrase)
    return bool(tokens) and "".join(tokens) == phrase.lower() and all(len(t) >= 2 for t in tokens)


def rising_phrases(rows: list[tuple[str, int, int]], n_current: int, n_baseline: int,
                   baseline_weeks: int = TOPIC_BASELINE_WEEKS, min_count: int = TOPIC_MIN_COUNT,
                   limit: int = TOPIC_LIMIT) -> list[TopicRow]:
    """Phrases named by at least `min_count` requests this week whose smoothed share grew by at least
    TOPIC_MIN_LIFT, ranked by a Poisson-style z-score so that three mentions of a new phrase do not
    outrank a doubling of a common one."""
    if n_current == 0 or n_baseline == 0:
        return []
    k = TOPIC_PSEUDO_COUNT
    out = []
    for phrase, count, baseline in rows:
        if count < min_count or not is_topic(phrase):
            continue
        lift = ((count + k) / (n_current + k)) / ((baseline + k) / (n_baseline + k))
        if lift < TOPIC_MIN_LIFT:
            continue
        expected = baseline * n_current / n_baseline
        score = (count - expected) / math.sqrt(expected + k)
        out.append(TopicRow(phrase=phrase, count=count, baseline_weekly=round(baseline / baseline_weeks, 2),
                            lift=round(lift, 2), score=round(score, 2)))
    out.sort(key=lambda r: (-r.score, -r.count, r.phrase))
    return out[:limit]


# --- sections ---------------------------------------------------------------------------------
def _volume(session: Session, week: Week) -> Volume:
    trend_weeks = [week.shift(-i) for i in range(TREND_WEEKS - 1, -1, -1)]
    last_year = week.last_year()
    counts = q.window_counts(session, [(w.start, w.end) for w in trend_weeks] + [(last_year.start, last_year.end)])
    trend = [WeekCount(week=w.label, count=n, high_risk=h) for w, (n, h) in zip(trend_weeks, counts, strict=False)]
    current, previous = counts[TREND_WEEKS - 1][0], counts[TREND_WEEKS - 2][0]
    first = q.first_received(session)

    def before_data(w: Week) -> bool:
        return first is None or first >= w.end

    prev_week = week.shift(-1)
    wow = change(current, None if before_data(prev_week) else previous,
                 f"{prev_week.label} 无数据（最早记录晚于该周）")
    if before_data(last_year):
        since = f"最早记录 {first.astimezone(week.zone).date().isoformat()}" if first else "尚无记录"
        yoy = change(current, None, f"上年同期 {last_year.label} 无数据（{since}），同比无法计算")
    else:
        yoy = change(current, counts[-1][0])
        if first is not None and first > last_year.start:
            yoy.note = f"上年同期 {last_year.label} 数据不完整（最早记录 {first.astimezone(week.zone).date().isoformat()}）"
    return Volume(this_week=current, week_on_week=wow, year_on_year=yoy, trend=trend)


def _breakdowns(session: Session, week: Week) -> dict[str, list[BreakdownRow]]:
    out = {}
    prev = week.shift(-1)
    for name, column in (("categories", Complaint.category), ("causes", Complaint.cause),
                         ("channels", Complaint.channel)):
        rows = q.breakdown(session, column, week.start, week.end, prev.start)
        total = sum(r[1] for r in rows)
        out[name] = [BreakdownRow(label=lab, count=n, share=_share(n, total) or 0.0, previous=p, high_risk=h)
                     for lab, n, p, h in rows]
    return out


def _branches(session: Session, week: Week) -> list[BranchRow]:
    figures = q.branches(session, week)
    figures.sort(key=lambda f: (-f.count, -f.high_risk, f.branch))
    return [BranchRow(rank=i + 1, branch=f.branch, count=f.count, previous=f.previous, high_risk=f.high_risk,
                      due=f.due, closed_within_15=f.closed_within_15,
                      closed_within_15_share=_share(f.closed_within_15, f.due), open_over_15=f.open_over_15)
            for i, f in enumerate(figures)]


def _high_risk(session: Session, week: Week) -> HighRisk:
    counts, rows = q.high_risk(session, week.start, week.end)
    return HighRisk(**counts, items=[HighRiskItem(**r) for r in rows])


def _letters(session: Session, week: Week) -> Letters:
    data = q.letters(session, week.start, week.end)
    dead, dead_rows = q.dead_messages(session)
    return Letters(**{k: v for k, v in data.items() if k not in ("by_department", "overdue_items")},
                   by_department=[DepartmentLetters(**r) for r in data["by_department"]],
                   overdue_items=[LetterRow(**r) for r in data["overdue_items"]],
                   undeliverable=dead, undeliverable_items=[DeadMessage(**r) for r in dead_rows])


def _handling(session: Session, week: Week) -> Handling:
    data = q.handling(session, week)
    closings = data.pop("closings")
    durations = [days for days, _ in closings]
    return Handling(
        closed=len(closings), median_days=round(statistics.median(durations), 1) if durations else None,
        closed_this_week_within_15_share=_share(sum(n <= 15 for _, n in closings), len(closings)),
        closed_within_15_share=_share(data["due_closed_within_15"], data["due"]),
        due_soon=[DueItem(**r) for r in data.pop("due_soon")], **data)


def _topics(session: Session, week: Week, n_current: int) -> Topics:
    base_start = week.shift(-TOPIC_BASELINE_WEEKS).start
    n_baseline = sum(n for n, _ in q.window_counts(session, [(base_start, week.start)]))
    common = {"baseline_weeks": TOPIC_BASELINE_WEEKS, "min_count": TOPIC_MIN_COUNT}
    if n_current == 0:
        return Topics(**common, items=[], note="本周无投诉")
    if n_baseline == 0:
        return Topics(**common, items=[], note=f"前 {TOPIC_BASELINE_WEEKS} 周无数据，无法判断上升话题")
    rows = q.phrase_counts(session, base_start, week.start, week.end)
    items = rising_phrases(rows, n_current, n_baseline)
    note = None if items else "本周没有明显上升的话题"
    return Topics(**common, items=items, note=note)


def _model_health(session: Session, week: Week, reference: Reference) -> ModelHealth:
    data = q.score_summary(session, week.start, week.end)
    scored, hist = data["scored"], data["histogram"]
    ref = reference.histogram
    value, notes = None, []
    if ref is None or len(ref) != len(hist) or sum(ref) <= 0:
        notes.append("当前模型没有训练参考分布（risk_reference_histogram），无法计算 PSI")
    elif scored == 0:
        notes.append("本周没有风险评分")
    else:
        value = round(psi([float(h) for h in hist], [float(r) for r in ref]), 4)
        if scored < PSI_MIN_SAMPLE:
            notes.append(f"本周仅 {scored} 条评分（少于 {PSI_MIN_SAMPLE}），PSI 仅供参考，不作漂移判断")
    versions = [VersionCount(version=v, count=n) for v, n in data["versions"]]
    if reference.version and any(v.version != reference.version for v in versions):
        notes.append(f"参考分布取自当前模型 {reference.version}；本周部分请求由其他版本评分")
    return ModelHealth(
        scored=scored, psi=value, drift=value is not None and value > PSI_THRESHOLD and scored >= PSI_MIN_SAMPLE,
        psi_threshold=PSI_THRESHOLD, reference_version=reference.version,
        histogram=[round(h / scored, 4) if scored else 0.0 for h in hist],
        reference_histogram=[float(r) for r in ref] if ref else None,
        needs_review=data["needs_review"], needs_review_share=_share(data["needs_review"], data["total"]),
        versions=versions, note="；".join(notes) or None)


def alert_watch(session: Session, start: datetime, end: datetime, outcomes_from: datetime,
                reference: Reference) -> AlertWatch:
    """Requests of [start, end) per level against the reference's expected rates; recall, precision
    and 漏报 over the requests of [outcomes_from, end) whose escalation outcome is recorded (the
    digest's section and the /metrics gauges alike)."""
    counts = q.level_counts(session, start, end)
    scored = sum(counts.values())
    expected = reference.expected_alert_rates or {}
    window_start = outcomes_from
    known = q.escalation_outcomes(session, window_start, end)
    escalated = [r for r in known if r["escalated"]]
    levels, notes = [], []
    for k, level in enumerate(ALERT_LEVELS):
        at_or_above = set(ALERT_LEVELS[: k + 1])
        raised = sum(counts.get(name, 0) for name in at_or_above)
        rate, want = _share(raised, scored), expected.get(level)
        alerted = [r for r in known if r["risk_level"] in at_or_above]
        hits = sum(1 for r in alerted if r["escalated"])
        off = (rate is not None and want is not None and want > 0 and scored >= PSI_MIN_SAMPLE
               and not RATE_BAND[0] <= rate / want <= RATE_BAND[1])
        levels.append(LevelWatch(level=level, raised=raised, rate=rate, expected_rate=want, off=off,
                                 outcomes_alerted=len(alerted), recall=_share(hits, len(escalated)),
                                 precision=_share(hits, len(alerted))))
        if off:
            notes.append(f"{level}{'' if k == 0 else '及以上'}占 {rate:.1%}，模型卡预期 {want:.1%}：请核查模型与来件构成")
    if not expected:
        notes.append("当前模型卡没有预期预警率（expected_alert_rates），无法比较")
    if not known:
        notes.append("统计期内没有记录升级结果（POST /v1/complaints/{id}/outcome），无法评估召回与精确率")
    missed = [r for r in escalated if r["alert_id"] is None]
    missed.sort(key=lambda r: (-(r["risk_score"] or 0.0), r["received_at"], r["id"]))
    return AlertWatch(
        levels=levels, outcomes_from=window_start, outcomes_to=end, outcomes=len(known),
        escalated=len(escalated), missed_total=len(missed),
        missed=[MissedItem(**{name: r[name] for name in MissedItem.model_fields}) for r in missed[:q.LIST_LIMIT]],
        note="；".join(notes) or None)


def build_digest(session: Session, week: Week, *, reference: Reference = NO_REFERENCE,
                 now: datetime | None = None) -> WeeklyDigest:
    """The digest of `week` as the database has it now."""
    now = now or datetime.now(UTC)
    volume = _volume(session, week)
    return WeeklyDigest(
        week=week.label, start=week.start, end=week.end, timezone=week.zone.key, complete=week.end <= now,
        generated_at=now, volume=volume, **_breakdowns(session, week), branches=_branches(session, week),
        high_risk=_high_risk(session, week), letters=_letters(session, week), handling=_handling(session, week),
        topics=_topics(session, week, volume.this_week), model_health=_model_health(session, week, reference),
        alert_watch=alert_watch(session, week.start, week.end, week.shift(-(OUTCOME_WEEKS - 1)).start, reference))


def content_hash(digest: WeeklyDigest) -> str:
    """sha256 of the figures, without the generation time: the same data gives the same hash."""
    data = digest.model_dump(mode="json", exclude={"generated_at"})
    return hashlib.sha256(json.dumps(data, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()

