"""The routing file (first match wins, validation with clear errors) and the deadline calendar."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
import yaml

from service.app import create_app
from service.deadlines import WorkCalendar, ack_due, last_day, response_due
from service.routing import RoutingError, default_path, load_routing, parse_routing
from service.settings import DEFAULT_CATEGORIES, DEFAULT_CAUSES, Settings

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
