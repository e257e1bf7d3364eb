"""The routing file (first match wins, validation with clear errors) and the deadline calendar."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
import yaml

from service.app import create_app
from service.clock import ManualClock
from service.letters.deadlines import ack_due, last_day, response_due
from service.routing import RoutingError, default_path, load_routing, parse_routing
from service.settings import DEFAULT_CATEGORIES, DEFAULT_CAUSES, Settings
from service.workdays import CalendarNotCovered, WorkCalendar
from tests.service.alerting_support import routing_file

SH = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def shipped():
    return load_routing(Settings())


def _raw() -> dict:
    return yaml.safe_load(default_path().read_text(encoding="utf-8"))


def _route(routing, category=None, cause=None, branch="城东支行", channel="电话客服"):
    return routing.explain(category=category, cause=cause, branch=branch, channel=channel)


def test_shipped_file_routes_every_category_to_a_business_department(shipped):
    assert shipped.warnings == ()
    for category in DEFAULT_CATEGORIES:
        for cause in DEFAULT_CAUSES:
            department, where = _route(shipped, category, cause)
            assert department in shipped.departments and where != "default_receiver", (category, cause)
    assert _route(shipped, "信用卡", "定价收费")[0] == "信用卡中心"
    assert _route(shipped, "个人贷款", "合同条款")[0] == "个人信贷部"
    assert _route(shipped, "自营理财", "产品收益")[0] == "财富管理部"
    assert _route(shipped, "外汇", "管理制度、业务规则与流程")[0] == "国际业务部"


def test_first_match_wins_and_children_refine(shipped):
    # the information-security route comes before the card route
    assert _route(shipped, "信用卡", "消费者信息安全") == ("信息科技部", "routes[0]")
    # system faults: on an e-channel to IT, at the counter by category (with a child route)
    assert _route(shipped, "借记卡", "服务设施、设备、业务系统", channel="手机银行")[0] == "信息科技部"
    assert _route(shipped, "借记卡", "服务设施、设备、业务系统", channel="营业网点") == ("运营管理部", "routes[6].routes[0]")
    assert _route(shipped, "借记卡", "定价收费") == ("个人金融部", "routes[6]")
    # debt collection goes to retail lending, except on cards, whose route comes first
    assert _route(shipped, "人民币储蓄", "债务催收方式和手段")[0] == "个人信贷部"
    assert _route(shipped, "信用卡", "债务催收方式和手段")[0] == "信用卡中心"


def test_no_labels_fall_to_the_default_receiver(shipped):
    assert _route(shipped, None, None) == ("消费者权益保护部", "default_receiver")


def test_branch_and_channel_conditions_and_default(tmp_path):
    raw = _raw()
    raw["routes"] = [{"match": {"branch": ["港口支行", "江北支行"], "category": "信用卡"}, "department": "办公室"},
                     {"match": {"channel": "媒体"}, "department": "消费者权益保护部"},
                     {"match": {"category": "信用卡"}, "department": "信用卡中心"}]
    raw["default_receiver"] = "个人金融部"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    routing = load_routing(Settings(routing_file=path))
    assert _route(routing, "信用卡", "定价收费", branch="港口支行")[0] == "办公室"
    assert _route(routing, "信用卡", "定价收费", branch="城东支行")[0] == "信用卡中心"
    assert _route(routing, "信用卡", "定价收费", channel="媒体", branch="城东支行")[0] == "消费者权益保护部"
    assert _route(routing, "外汇", "定价收费") == ("个人金融部", "default_receiver")


@pytest.mark.parametrize("change, message", [
    (lambda r: r["routes"].append({"match": {"category": "信用卡中心"}, "department": "办公室"}),
     "routes[12].match.category: '信用卡中心' is not a known category"),
    (lambda r: r["routes"].append({"match": {"cause": "态度差"}, "department": "办公室"}),
     "routes[12].match.cause: '态度差' is not a known cause"),
    (lambda r: r["routes"][6]["routes"].append({"match": {"channel": "柜台"}, "department": "办公室"}),
     "routes[6].routes[1].match.channel: '柜台' is not a known channel"),
    (lambda r: r["routes"].append({"match": {"category": "外汇"}, "department": "风险部"}),
     "routes[12].department: '风险部' is not listed under departments"),
    (lambda r: r["routes"].append({"match": {"product": "x"}, "department": "办公室"}),
     "routes[12].match: unknown key 'product'"),
    (lambda r: r["routes"].append({"match": {"category": "外汇"}}), "routes[12]: a route needs a department"),
    (lambda r: r.update(default_receiver="风险部"), "default_receiver: '风险部' is not listed"),
    (lambda r: (r["departments"].pop("消费者权益保护部"), r.update(default_receiver="办公室")),
     "the protection department '消费者权益保护部'"),
    (lambda r: r["departments"]["办公室"].update(email="not-an-address"), "departments.办公室.email[0]"),
    (lambda r: r["departments"]["办公室"].update(webhook={"url": "ftp://x", "secret_env": "S"}),
     "departments.办公室.webhook.url: 'ftp://x' is not an http(s) URL"),
    (lambda r: r["departments"]["办公室"].update(webhook={"url": "https://x", "secret_env": "s3cr3t value!"}),
     "name the environment variable that holds the secret"),
    (lambda r: r["departments"]["办公室"].update(email=None), "departments.办公室: give an email or a webhook"),
    (lambda r: r.update(calendar={"holidays": ["2026-13-01"]}), "calendar.holidays[0]: '2026-13-01' is not a date"),
    (lambda r: r.update(calendar={"holidays": ["2026-10-09"], "workdays": ["2026-10-09"]}),
     "calendar: 2026-10-09 is listed under both holidays and workdays"),
    (lambda r: r.update(calendar={"years": ["2027"]}), "calendar.years[0]: '2027' is not a year"),
    (lambda r: r.update(calendar={"years": 2027}), "calendar.years: expected a list of years"),
    (lambda r: r.update(version=2), "unsupported version 2"),
    (lambda r: r.update(receivers=[]), "top level: unknown key 'receivers'"),
])
def test_a_bad_file_is_refused_naming_the_place(tmp_path, change, message):
    raw = _raw()
    change(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(RoutingError) as err:
        load_routing(Settings(routing_file=path))
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_unreadable_files_are_refused(tmp_path):
    with pytest.raises(RoutingError, match="not found"):
        load_routing(Settings(routing_file=tmp_path / "none.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("routes:\n  - match: {category: [信用卡\n", encoding="utf-8")
    with pytest.raises(RoutingError, match=r"not valid YAML at line \d+"):
        load_routing(Settings(routing_file=broken))
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(RoutingError, match="the file is empty"):
        load_routing(Settings(routing_file=empty))


def test_the_app_does_not_start_on_a_bad_routing_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("departments: {}\n", encoding="utf-8")
    with pytest.raises(RoutingError, match="list at least one department"):
        create_app(Settings(routing_file=path, database_url=f"sqlite:///{tmp_path}/x.db"))


def test_shipped_file_with_other_label_lists_warns_instead_of_failing():
    routing = load_routing(Settings(channels=["柜面", "App"]))
    assert any("'手机银行' is not a known channel" in w for w in routing.warnings)
    assert routing.route(category="信用卡", cause="定价收费", branch="x", channel="App") == "信用卡中心"


def test_webhook_secrets_are_read_from_the_environment(monkeypatch):
    raw = _raw()
    raw["departments"]["信用卡中心"]["webhook"] = {"url": "https://oa.example/hook", "secret_env": "XB_CARD_SECRET"}
    monkeypatch.delenv("XB_CARD_SECRET", raising=False)
    routing = parse_routing(raw, Settings())
    assert routing.missing_secrets() == ["XB_CARD_SECRET"]
    monkeypatch.setenv("XB_CARD_SECRET", "s")
    assert routing.missing_secrets() == [] and routing.contact("信用卡中心").webhook.secret() == "s"
    # a department that left the file is reached through the default receiver
    assert routing.contact("已撤销部门").department == "消费者权益保护部"


# --- deadlines -------------------------------------------------------------------------------------
def test_working_days_skip_weekends_and_holidays_and_count_makeup_days():
    cal = WorkCalendar(holidays=[date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 5)],
                       workdays=[date(2026, 10, 10)])
    assert cal.add_working_days(date(2026, 5, 8), 2) == date(2026, 5, 12)  # Friday + 2 → Tuesday
    assert cal.add_working_days(date(2026, 5, 6), 0) == date(2026, 5, 6)
    assert cal.add_working_days(date(2026, 9, 30), 1) == date(2026, 10, 6)  # over the holidays and the weekend
    assert cal.add_working_days(date(2026, 10, 9), 1) == date(2026, 10, 10)  # a Saturday 调休 workday


def test_deadlines_end_with_the_local_day():
    received = datetime(2026, 5, 6, 17, 30, tzinfo=UTC)  # 7 May 01:30 in Shanghai
    due = response_due(received, 15, SH)
    assert due == datetime(2026, 5, 22, 16, 0, tzinfo=UTC)  # end of 22 May in Shanghai
    assert last_day(due, SH) == date(2026, 5, 22)
    assert last_day(response_due(received, 30, SH), SH) == date(2026, 6, 6)
    issued = datetime(2026, 5, 8, 7, 0, tzinfo=UTC)  # Friday 15:00 in Shanghai
    assert last_day(ack_due(issued, 2, WorkCalendar(), SH), SH) == date(2026, 5, 12)


# --- the working-day calendar: chinesecalendar, the routing file's overrides, coverage ---------------
# NOT the State Council's 2027 schedule (unpublished when this was written): a made-up one around
# 春节 (Saturday 6 February 2027), to show that a routing file can cover a year the package lacks.
HYPOTHETICAL_2027 = {"years": [2027],
                     "holidays": ["2027-01-01", *(f"2027-02-{d:02d}" for d in range(5, 13))],  # 元旦; Fri 5 – Fri 12 Feb
                     "workdays": ["2027-01-31", "2027-02-20"]}  # 调休: Sunday 31 January, Saturday 20 February


def _at(day: str, hour: int = 15) -> datetime:
    """A moment of a local day in Shanghai."""
    return datetime.fromisoformat(f"{day}T{hour:02d}:00").replace(tzinfo=SH)


def _ack_day(issued: str, n: int, calendar: WorkCalendar) -> date:
    return last_day(ack_due(_at(issued), n, calendar, SH), SH)


def test_national_day_2026_comes_from_the_package(shipped):
    cal = shipped.calendar
    assert _ack_day("2026-09-30", 2, cal) == date(2026, 10, 9)  # 1-7 October off: Thursday 8 and Friday 9
    assert _ack_day("2026-10-09", 1, cal) == date(2026, 10, 10)  # Saturday 10 October is a 调休 working day
    assert _ack_day("2026-09-30", 3, cal) == date(2026, 10, 10)
    assert _ack_day("2026-09-18", 1, cal) == date(2026, 9, 20)  # so is Sunday 20 September
    assert _ack_day("2026-09-24", 1, cal) == date(2026, 9, 28)  # 中秋: Friday 25 September off
    assert not cal.is_working_day(date(2026, 10, 5)) and cal.is_working_day(date(2026, 10, 8))


def test_routing_file_overrides_win_over_the_package(tmp_path):
    path = routing_file(tmp_path, calendar={"holidays": ["2026-10-10", "2026-09-28"], "workdays": ["2026-10-07"]})
    cal = load_routing(Settings(routing_file=path)).calendar
    assert _ack_day("2026-09-30", 1, cal) == date(2026, 10, 7)  # a package holiday the bank works
    assert _ack_day("2026-10-09", 1, cal) == date(2026, 10, 12)  # a package 调休 Saturday the bank closes
    assert _ack_day("2026-09-24", 1, cal) == date(2026, 9, 29)  # a local closure on an ordinary Monday
    assert _ack_day("2026-05-08", 2, cal) == date(2026, 5, 11)  # the rest of the year is still the package's


def test_spring_festival_2027_from_a_routing_file_that_covers_2027(tmp_path):
    path = routing_file(tmp_path, calendar=HYPOTHETICAL_2027)
    routing = load_routing(Settings(routing_file=path))
    assert routing.warnings == () and routing.years == {2027}
    cal = routing.calendar
    assert _ack_day("2027-02-04", 2, cal) == date(2027, 2, 16)  # over 春节 and the weekend after it
    assert _ack_day("2027-01-29", 1, cal) == date(2027, 1, 31)  # the 调休 Sunday before it
    assert _ack_day("2027-02-19", 1, cal) == date(2027, 2, 20)  # the 调休 Saturday after it
    assert _ack_day("2026-12-31", 1, cal) == date(2027, 1, 4)  # across the year: 1 January off
    assert _ack_day("2026-09-30", 2, cal) == date(2026, 10, 9)  # 2026 still comes from the package
    # the app starts in 2027 with it
    create_app(Settings(routing_file=path, database_url=f"sqlite:///{tmp_path}/x.db"),
               clock=ManualClock(_at("2027-02-04")))


def test_a_year_nobody_covers_is_never_weekend_only(shipped):
    cal = shipped.calendar
    assert not cal.covers(2027)
    with pytest.raises(CalendarNotCovered, match="does not cover 2027") as err:
        cal.is_working_day(date(2027, 3, 1))
    assert "calendar.years" in str(err.value) and "upgrade chinesecalendar" in str(err.value)
    with pytest.raises(CalendarNotCovered):
        ack_due(_at("2026-12-30"), 2, cal, SH)
    # computed anyway, every uncovered day counts: Thursday 31 December, then Friday 1 January 2027
    assert last_day(ack_due(_at("2026-12-30"), 2, cal, SH, uncovered_as_working=True), SH) == date(2027, 1, 1)
    assert cal.add_working_days(date(2027, 3, 5), 2, uncovered_as_working=True) == date(2027, 3, 7)  # a Sunday
    assert _ack_day("2026-12-29", 2, cal) == date(2026, 12, 31)  # a count that stays in 2026 is exact
    with pytest.raises(CalendarNotCovered, match="2003"):
        cal.is_working_day(date(2003, 10, 1))  # before the package's first year as well


def test_the_app_refuses_to_start_in_an_uncovered_year(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path}/x.db")
    with pytest.raises(RoutingError) as err:
        create_app(settings, clock=ManualClock(_at("2027-03-01")))
    message = str(err.value)
    assert "\n" not in message and str(default_path()) in message
    assert "does not cover 2027" in message and "add 2027 to calendar.years" in message
    create_app(settings, clock=ManualClock(_at("2026-03-01")))  # 2026 is the package's


def test_start_up_warns_before_the_year_end_while_the_next_year_is_missing(tmp_path, shipped):
    assert shipped.check_calendar(date(2026, 10, 31)) == []
    [warning] = shipped.check_calendar(date(2026, 11, 1))
    assert "does not cover 2027" in warning and "every day of 2027 as a working day" in warning
    covered = load_routing(Settings(routing_file=routing_file(tmp_path, calendar=HYPOTHETICAL_2027)))
    assert covered.check_calendar(date(2026, 12, 4)) == []
    with pytest.raises(RoutingError, match="does not cover 2028"):
        covered.check_calendar(date(2028, 1, 3))


def test_a_partial_or_empty_year_in_the_routing_file_warns(tmp_path):
    partial = routing_file(tmp_path, calendar={"holidays": ["2027-02-05"]})  # 2027 not declared
    routing = load_routing(Settings(routing_file=partial))
    assert any("lists days of 2027 but does not cover it" in w for w in routing.warnings)
    assert not routing.calendar.covers(2027)
    empty = routing_file(tmp_path, calendar={"years": [2027]})
    routing = load_routing(Settings(routing_file=empty))
    assert any("2027 is declared but no holiday of 2027 is listed" in w for w in routing.warnings)
    assert routing.calendar.covers(2027)  # declared is declared: the warning says what that means
