"""One vocabulary: every status and risk level has one label, shown the same wherever it appears,
and the API states and enforces the allowed values."""

from __future__ import annotations

import pytest
from jinja2 import DictLoader

from models.bundle import RISK_LEVELS as BUNDLE_LEVELS
from service.templating import environment
from service.vocab import (
    LABELS,
    RISK_LEVELS,
    VOCABULARIES,
    AlertStatus,
    ComplaintStatus,
    LetterStatus,
    OutboxStatus,
    RiskLevel,
    label,
    labels,
    one_of,
)


def test_every_status_and_level_has_one_label_of_its_own():
    for vocabulary in VOCABULARIES.values():
        names = labels(vocabulary)
        assert list(names) == [m.value for m in vocabulary]
        assert all(names.values()) and len(set(names.values())) == len(names), vocabulary.__name__
    assert set(LABELS) == set(VOCABULARIES.values())


def test_the_same_value_keeps_the_meaning_of_its_vocabulary():
    # "open" and "resolved" occur in several vocabularies and read differently in each
    assert label("resolved", "letter") == "已办结" and label("resolved", "alert") == "已解决"
    assert label("open", "alert") == "待处理" and label("open", ComplaintStatus) == "未办结"
    assert label("acknowledged", LetterStatus) == "已签收，处理中"


def test_an_unknown_value_shows_as_itself_and_none_stays_none():
    assert label("archived", "letter") == "archived"
    assert label(None, "alert") is None


def test_the_service_and_the_model_share_the_risk_levels():
    assert RISK_LEVELS == BUNDLE_LEVELS == (RiskLevel.HIGH, RiskLevel.MEDIUM, RiskLevel.LOW)
    assert [str(level) for level in RISK_LEVELS] == ["高", "中", "低"]


def test_check_constraints_list_the_vocabulary():
    assert one_of("status", LetterStatus) == "status IN ('issued', 'acknowledged', 'resolved')"
    assert one_of("risk_level", RiskLevel) == "risk_level IN ('高', '中', '低')"


@pytest.mark.parametrize("name", ["page.html.j2", "notice.txt.j2"])
def test_every_template_environment_has_the_label_filter(name):
    env = environment(DictLoader({name: '{{ s | label("letter") }}/{{ a | label("alert") }}'}))
    assert env.get_template(name).render(s="issued", a="silenced") == "待签收/已静默"


@pytest.mark.parametrize("path, field, allowed", [
    ("/v1/complaints?risk_level=极高", "risk_level", RiskLevel),
    ("/v1/complaints?status=pending", "status", ComplaintStatus),
    ("/v1/letters?status=sent", "status", LetterStatus),
    ("/v1/outbox?status=lost", "status", OutboxStatus),
])
def test_a_value_outside_the_vocabulary_is_a_422_that_lists_the_allowed_ones(client, h, path, field, allowed):
    r = client.get(path, headers=h["admin"])
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == field
    assert all(f"'{member.value}'" in error["message"] for member in allowed), error["message"]


def test_the_schema_lists_the_allowed_statuses_and_levels(client):
    doc = client.get("/openapi.json").json()
    enums = {name: spec.get("enum") for name, spec in doc["components"]["schemas"].items()}
    for vocabulary in (LetterStatus, AlertStatus, OutboxStatus, ComplaintStatus, RiskLevel):
        assert enums[vocabulary.__name__] == [m.value for m in vocabulary]
    parameters = {(path, p["name"]): p["schema"] for path, item in doc["paths"].items()
                  for op in item.values() for p in op.get("parameters", [])}
    for path, name, vocabulary in (("/v1/complaints", "risk_level", RiskLevel), ("/v1/complaints", "status", ComplaintStatus),
                                   ("/v1/letters", "status", LetterStatus), ("/v1/outbox", "status", OutboxStatus)):
        refs = [alt.get("$ref") for alt in parameters[(path, name)]["anyOf"]]
        assert f"#/components/schemas/{vocabulary.__name__}" in refs, (path, name)
    letter = doc["components"]["schemas"]["LetterSummary"]["properties"]
    assert letter["status"]["$ref"] == "#/components/schemas/LetterStatus"
