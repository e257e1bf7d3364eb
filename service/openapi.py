"""The OpenAPI document says what the service really accepts and answers, and query strings are
checked as strictly as bodies.

`install(app, settings)` rewrites the generated schema once:

- limits that come from the settings (channels, text length, batch sizes, page size) appear as
  `enum`, `maxLength`, `maxItems`, `maximum`, so clients (and the fuzzer) see the deployment's rules;
- the cross-field rules that the models check in validators (one text or a batch; a silence matches
  something; feedback says something; 60 days need an approver) become `oneOf`/`anyOf`/`if`;
- every /v1 operation documents the answers any of them can give: 401, 403, 429 (rate limit),
  413 and 400 where a body is read, 422 for a bad query parameter.

`checked_query` (a router dependency) refuses query parameters a route does not declare (a typo
such as `?stauts=open` would otherwise silently return everything) and values PostgreSQL cannot
store or compare (NUL characters), with a 422 naming the parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute

from service.digest.render import FORMATS as DIGEST_FORMATS
from service.errors import invalid
from service.schemas import INVISIBLE
from service.settings import Settings

_ERROR_REF = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
COMMON_ERRORS = {
    "401": "no key, or an unknown or revoked one",
    "403": "the key's scope may not do this",
    "422": "a parameter or field is invalid (named in `error.field`)",
    "429": "the key's request rate is exceeded; retry after `Retry-After` seconds",
}
BODY_ERRORS = {"400": "the body is not valid JSON or not UTF-8", "413": "the body exceeds the size limit"}


def _declared_query(route: APIRoute) -> frozenset[str]:
    names: set[str] = set()
    stack = [route.dependant]
    while stack:  # the route's own parameters and those of its dependencies
        dependant = stack.pop()
        names.update(field.alias for field in dependant.query_params)
        stack.extend(dependant.dependencies)
    return frozenset(names)


async def checked_query(request: Request) -> None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = getattr(route, "_xiaobao_query", None)
    if known is None:
        known = route._xiaobao_query = _declared_query(route)  # type: ignore[attr-defined]
    seen: set[str] = set()
    for name, value in request.query_params.multi_items():
        if name in seen:  # every parameter is a single value; the last would silently win
            raise invalid(name, "is given more than once")
        seen.add(name)
        if name not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise invalid(name or "query", f"unknown query parameter {name!r}; this route takes: {allowed}")
        if "\x00" in value:
            raise invalid(name, "contains a NUL character")


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of `anyOf: [X, {type: null}]` (or the schema itself)."""
    for branch in schema.get("anyOf", []):
        if branch.get("type") != "null":
            return branch
    return schema


# An ISO week from 1900 on (empty: the default week); W53 exists only in some years.
WEEK = r"^$|^(19|[2-9]\d)\d\d-W(0[1-9]|[1-4]\d|5[0-3])$"
# A character that survives str.strip and models.text.clean (C0/C1 controls, zero-width marks,
# bidirectional controls).
VISIBLE = rf"[^\s\x80-\x9f\u2028\u2029{INVISIBLE}]"
# An id with a character that survives stripping and none that clean would drop.
VISIBLE_ID = rf"^[^{INVISIBLE}]*[^\s{INVISIBLE}][^{INVISIBLE}]*$"


def _patch(doc: dict[str, Any], settings: Settings, departments: list[str]) -> dict[str, Any]:
    schemas = doc.get("components", {}).get("schemas", {})

    def prop(model: str, name: str) -> dict[str, Any]:
        return _nullable(schemas[model]["properties"][name])

    for model in ("PredictItem", "PredictRequest", "ComplaintIn"):
        if model in schemas:
            prop(model, "text").update(minLength=1, maxLength=settings.max_text_chars, pattern=VISIBLE)
            prop(model, "channel").update(enum=list(settings.channels))
    if "ComplaintIn" in schemas:
        prop("ComplaintIn", "branch").update(pattern=VISIBLE)
        prop("ComplaintIn", "external_id").update(pattern=VISIBLE_ID)
    if "PredictRequest" in schemas:
        prop("PredictRequest", "items").update(minItems=1, maxItems=settings.predict_batch_max)
        null = {"type": "null"}
        schemas["PredictRequest"]["oneOf"] = [
            {"required": ["text"], "properties": {"text": {"type": "string"}, "items": null}},
            {"required": ["items"], "properties": {"items": {"type": "array"}, **{
                f: null for f in ("text", "channel", "repeat_count", "amount", "product")}}}]
    if "ComplaintBatchIn" in schemas:
        schemas["ComplaintBatchIn"]["properties"]["items"].update(minItems=1, maxItems=settings.intake_batch_max)
    if "SilenceIn" in schemas:
        prop("SilenceIn", "department").update(enum=list(departments))
        prop("SilenceIn", "category").update(enum=list(settings.categories))
        prop("SilenceIn", "cause").update(enum=list(settings.causes))
        prop("SilenceIn", "branch").update(pattern=VISIBLE)
        schemas["SilenceIn"]["anyOf"] = [{"required": [f], "properties": {f: {"type": "string"}}}
                                         for f in ("department", "category", "cause", "branch")]
    if "OutcomeIn" in schemas:
        prop("OutcomeIn", "category").update(enum=list(settings.categories))
        prop("OutcomeIn", "cause").update(enum=list(settings.causes))
        schemas["OutcomeIn"]["anyOf"] = [
            *({"required": [f], "properties": {f: {"not": {"type": "null"}}}}
              for f in ("escalated", "category", "cause", "note", "closed_at")),
            *({"required": [f], "properties": {f: {"const": True}}} for f in ("confirmed", "closed"))]
    # Strings are stripped before their minimum length is checked: " " is as empty as "".
    for model in ("ComplaintIn", "ExtendIn", "ResolveIn"):
        for spec in schemas.get(model, {}).get("properties", {}).values():
            spec = _nullable(spec)
            if spec.get("type") == "string" and spec.get("minLength") and "pattern" not in spec:
                spec["pattern"] = r"\S"
    if "ExtendIn" in schemas:
        schemas["ExtendIn"]["if"] = {"properties": {"days": {"const": 60}}, "required": ["days"]}
        schemas["ExtendIn"]["then"] = {"required": ["approved_by"],
                                       "properties": {"approved_by": {"type": "string", "pattern": VISIBLE}}}

    for path, item in doc.get("paths", {}).items():
        if not path.startswith("/v1"):
            continue
        for method, operation in item.items():
            for param in operation.get("parameters", []):
                if param.get("in") == "query" and param["name"] == "limit":
                    _nullable(param["schema"]).update(maximum=settings.page_limit_max)
                if param.get("in") == "query" and param["name"] == "format" and path == "/v1/digests/weekly":
                    _nullable(param["schema"]).update(enum=list(DIGEST_FORMATS))
                if param.get("in") == "query" and param["name"] == "week":
                    _nullable(param["schema"]).update(pattern=WEEK)
            responses = operation.setdefault("responses", {})
            extra = dict(COMMON_ERRORS)
            if method not in ("get", "delete"):  # BodyLimit reads any other method's body
                extra.update(BODY_ERRORS)
            for code, description in extra.items():
                responses.setdefault(code, {"description": description, **_ERROR_REF})
    return doc


def install(app: FastAPI, settings: Settings, departments: list[str]) -> None:
    """Replace `app.openapi` with one that patches the generated document (built once, cached)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _patch(generate(), settings, departments)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
