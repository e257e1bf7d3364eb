"""Schemathesis against the service's own OpenAPI schema: every operation, with an admin key and
without one, positive and negative data. A case fails on a 5xx, a status code the schema does not
document, a body or content type that violates the schema, or invalid data that is accepted.

The database is seeded first (complaints, an alert, a letter, a silence, outbox messages), so that
small ids reach real rows instead of 404s. The seeded rows and, in valid data, the free-text fields the
generator fills carry hostile payloads (tests/service/hostile.py: script, img onerror, svg onload,
attribute breakouts, bidi controls); an HTML answer holding an injected element or attribute fails,
and so does an HTML or text answer without nosniff and a CSP. Budget: XIAOBAO_FUZZ_EXAMPLES cases per
operation, auth mode and generation mode (make test: a few dozen; make proof: 1,000, see tests/proof)."""

from __future__ import annotations

import copy
import json
import os
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import hypothesis
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from service.app import create_app
from service.settings import Settings
from tests.service.conftest import bearer, complaint_body
from tests.service.hostile import PAYLOADS, fields_of, injected, strip_bidi

EXAMPLES = int(os.environ.get("XIAOBAO_FUZZ_EXAMPLES", "10"))
RESULTS = os.environ.get("XIAOBAO_FUZZ_RESULTS")  # a JSON-lines file the proof run aggregates
# Schema-valid data the service may still refuse: rules JSON Schema cannot state (times relative to
# now or to each other, weeks that do not exist, text that is only invisible characters) and what
# the databases cannot store (NUL; README: "strings may not contain NUL"). Any other
# 4xx to schema-valid data means the schema is wrong.
SEMANTIC_RULES = re.compile(r"lies in the future|lies before|is out of range|outside the supported range|"
                            r"must be later than|lies in the past|is empty once|is not an ISO week|"
                            r"has weeks W01 to|contains a NUL character")


# Fields (in bodies, batch items and query strings) that take any text: valid data stays valid with a
# payload in them. Ids are kept as sent and refuse bidi controls, so theirs have none.
FREE_TEXT = {"text", "branch", "customer_ref", "product", "note", "reason", "approved_by", "comment", "external_id",
             "department"}
FREE_TEXT_BODY = FREE_TEXT - {"department"}  # a silence's department must be a known one


def with_payload(case, payload: str | None):
    """`case` with `payload` in every free-text string it carries (None: unchanged)."""
    if payload is None:
        return case

    def fill(values: dict, names: set[str]) -> None:
        for name, value in values.items():
            if name in names and isinstance(value, str):
                values[name] = strip_bidi(payload) if name == "external_id" else payload

    if isinstance(case.body, dict):
        fill(case.body, FREE_TEXT_BODY)
        for item in case.body.get("items") or []:
            if isinstance(item, dict):
                fill(item, FREE_TEXT_BODY)
    if case.query:
        fill(case.query, FREE_TEXT)
    return case


def _operations() -> list[str]:
    """The operations of the schema, read from an app that is never started (no database needed)."""
    app = create_app(Settings(database_url="sqlite:///var/fuzz-collect-unused.db", migrate_on_start=False))
    paths = app.openapi()["paths"]
    return [f"{method.upper()} {path}" for path, item in paths.items() for method in item]


OPERATIONS = _operations()
_served_schema: dict = {}  # the first test's /openapi.json, parsed once per worker: it is the same for every app


def loaded_schema(app, client: TestClient):
    """Schemathesis's view of the app's schema, calling the app in process. Fetching and generating the
    schema for every test cost 0.3 s each."""
    if not _served_schema:
        _served_schema.update(client.get("/openapi.json").json())
    schema = schemathesis.openapi.from_dict(copy.deepcopy(_served_schema))
    schema.app, schema.location = app, "/openapi.json"  # what from_asgi sets after loading
    return schema


def seed(client: TestClient, headers: dict[str, str], corpus) -> None:
    """Rows for the generated ids to find: complaints (one a regulator referral, so an alert and a
    letter exist), an outcome, a silence, letters issued now, outbox messages."""
    now = datetime.now(UTC)
    rows = corpus.head(6).to_dict("records")
    for i, row in enumerate(rows):
        hostile = fields_of(i)  # what letters and digests show: payloads, to be rendered as text
        body = complaint_body(row, external_id=f"fuzz-{i}", received_at=(now - timedelta(hours=i + 1)).isoformat(),
                              text=hostile["text_head"] + row["text"], branch=hostile["branch"],
                              customer_ref=hostile["customer_ref"], product=hostile["product"])
        if i == 0:
            body["channel"] = "监管转办"
        r = client.post("/v1/complaints", json=body, headers=headers)
        assert r.status_code == 201, r.text
    client.post("/v1/complaints/1/outcome", json={"escalated": True}, headers=headers)
    r = client.post("/v1/silences", json={"category": "外汇", "ends_at": (now + timedelta(days=1)).isoformat(),
                                          "comment": fields_of(0)["silence_comment"]}, headers=headers)
    assert r.status_code == 201, r.text
    assert client.post("/v1/letters/flush", headers=headers).status_code == 200


def fuzz(op, mode: GenerationMode, auth: str, headers: dict[str, str], statuses: Counter[str],
         failures: list[str]) -> int:
    """Runs EXAMPLES generated cases of one operation; returns how many ran."""
    cases = 0
    # Valid data may carry a payload; invalid data is left as generated (a payload could make it valid).
    payloads = st.one_of(st.none(), st.sampled_from(PAYLOADS)) if mode is GenerationMode.POSITIVE else st.none()

    @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                         phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
    @hypothesis.given(case=st.builds(with_payload, op.as_strategy(generation_mode=mode), payloads))
    def run(case) -> None:
        nonlocal cases
        if mode is GenerationMode.NEGATIVE and any(v in ([], {}, None) or (isinstance(v, list) and len(v) == 1)
                                                   for v in (case.query or {}).values()):
            # An empty list or null has no query-string form (sent, the parameter is simply absent), and a
            # one-item list is sent as that item alone (?active=false): neither is invalid on the wire.
            return
        cases += 1
        if auth == "none":
            case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        try:
            response = case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])
            statuses[str(response.status_code)] += 1
            failures.extend(f"{problem}\n{case.as_curl_command()[:800]}" for problem in document_problems(response))
            if mode is GenerationMode.POSITIVE and auth == "admin" and response.status_code in (400, 422):
                message = response.json()["error"]["message"]
                if not SEMANTIC_RULES.search(message):
                    failures.append(f"schema-valid data refused: {message}\n{case.as_curl_command()[:800]}")
        except Exception as exc:  # a schemathesis FailureGroup: record it, keep generating
            failures.append(f"{mode.value}: {str(exc)[:1500]}\n{case.as_curl_command()[:800]}")

    try:
        run()
    except hypothesis.errors.Unsatisfiable:  # nothing to make invalid (no parameters)
        assert mode is GenerationMode.NEGATIVE
    return cases


def document_problems(response) -> list[str]:
    """What is wrong with an HTML or text answer: markup injected, nosniff or a CSP missing."""
    headers = {name.lower(): ", ".join(values) for name, values in response.headers.items()}  # lists here
    kind = headers.get("content-type", "")
    if response.status_code >= 300 or not kind.startswith(("text/html", "text/plain")):
        return []
    problems = []
    if kind.startswith("text/html") and injected(response.text):
        problems.append(f"injected into HTML: {injected(response.text)}")
    if headers.get("x-content-type-options") != "nosniff" or "content-security-policy" not in headers:
        problems.append(f"{kind} answer without nosniff and a CSP")
    return problems


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("auth", ["admin", "none"])
def test_schema_fuzzing(operation: str, auth: str, db, holder, settings, keys, corpus) -> None:
    # the rate limit would answer most cases 429 (documented, but nothing learnt): test_security tests it
    app = create_app(settings.model_copy(update={"rate_limit_per_second": 0}), database=db, model=holder)
    headers = bearer(keys["admin"]) if auth == "admin" else {}
    with TestClient(app, raise_server_exceptions=False) as client:
        if auth == "admin":  # without a key every answer is a refusal: no rows needed
            seed(client, bearer(keys["admin"]), corpus)
        schema = loaded_schema(app, client)
        method, path = operation.split(" ", 1)
        op = schema[path][method]
        statuses: Counter[str] = Counter()
        failures: list[str] = []
        cases = sum(fuzz(op, mode, auth, headers, statuses, failures)
                    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE))
        if RESULTS:
            with open(RESULTS, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"operation": operation, "auth": auth, "backend": db.backend, "cases": cases,
                                     "statuses": dict(statuses), "failures": len(failures)}, ensure_ascii=False)
                         + "\n")
        assert not failures, "\n\n".join(failures[:5])
        if auth == "none" and path.startswith("/v1"):
            assert set(statuses) <= {"401", "400", "413", "422", "405"}, statuses  # nothing but refusals
