"""Hostile text (tests/service/hostile.py) in every field, in a real browser (Chromium through
Playwright, as in test_console_browser.py), on SQLite and PostgreSQL: every console page, the
letter and the digest as the API serves them in HTML, and what the pages echo from the query string
and from refused forms. On each page no injected element or attribute exists in the DOM (shadow
roots included), no dialog opens, and each value is shown literally."""

from __future__ import annotations

from contextlib import ExitStack
from urllib.parse import urlencode

import httpx
import pytest

from service.settings import Settings
from tests.service.conftest import BACKENDS, bearer, throwaway_pg_database
from tests.service.hostile import (
    INJECTED_JS,
    PAYLOADS,
    TEXT_JS,
    complaint_values,
    department,
    external_id,
    fields_of,
    letter_values,
    missing,
    plant,
    stored,
    this_week,
    write_routing,
)
from tests.service.web.conftest import browser_sign_in, screenshot, serving

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module", params=BACKENDS)
def hostile(request, tmp_path_factory, trained_registry, holder, corpus):
    """A live console whose requests, notes and department names are all payloads."""
    registry, _ = trained_registry
    folder = tmp_path_factory.mktemp("hostile")
    with ExitStack() as stack:
        url = (f"sqlite:///{folder}/console.db" if request.param == "sqlite"
               else stack.enter_context(throwaway_pg_database()))
        settings = Settings(database_url=url, registry=registry.root, group_window_minutes=0,
                            routing_file=write_routing(folder / "routing.yaml"))
        live = stack.enter_context(serving(settings, holder))
        with httpx.Client(base_url=live.url, timeout=60) as http:
            planted = plant(http, bearer(live.keys["admin"]), bearer(live.keys["intake"]), corpus)
        yield live, planted


class Visits:
    """Opens pages in one browser page and collects, instead of stopping at the first, every page
    where something was injected, not shown literally, or a dialog opened."""

    def __init__(self, page) -> None:
        self.page, self.failures, self.dialogs = page, [], []
        page.on("dialog", lambda d: (self.dialogs.append(f"{page.url}: {d.message}"), d.dismiss()))

    def check(self, expected: list[str], where: str | None = None, title: str | None = None) -> None:
        where = where or self.page.url
        found = self.page.evaluate(INJECTED_JS)
        if found:
            self.failures.append(f"{where}: injected {found}")
        gone = missing(self.page.evaluate(TEXT_JS), expected)
        if gone:
            self.failures.append(f"{where}: not shown literally {gone}")
        if title is not None and self.page.title() != title:
            self.failures.append(f"{where}: title {self.page.title()!r}, expected {title!r}")

    def visit(self, path: str, expected: list[str], status: int = 200, title: str | None = None) -> None:
        response = self.page.goto(path)
        if response.status != status:
            self.failures.append(f"{path}: status {response.status}, expected {status}")
        self.check(expected, path, title)

    def assert_clean(self) -> None:
        assert not self.failures and not self.dialogs, "\n".join(self.failures + self.dialogs)


def complaint_title(k: int, repeat: bool = False) -> str:
    return f"诉求 {external_id(k, repeat)} · 消保预警"


def test_every_console_page_shows_hostile_text_as_text(open_page, hostile):
    live, planted = hostile
    page = open_page(1280, base_url=live.url)
    browser_sign_in(page, live.keys["protection"])
    v = Visits(page)
    departments = [department(k) for k in planted.letters]
    branches = [stored(fields_of(k)["branch"]) for k in planted.letters]
    v.visit("/console/", departments + branches)
    screenshot(page, "hostile-inbox-1280")
    v.visit("/console/?view=alerts", departments + branches)
    for k in planted.letters:
        v.visit("/console/?" + urlencode({"branch": branches[k], "department": departments[k]}),
                [departments[k], branches[k]])
        v.visit(f"/console/letters/{planted.letters[k]}", letter_values(k, k in planted.resolved))
        v.visit(f"/console/letters/{planted.letters[k]}/document", letter_values(k, k in planted.resolved))
        v.visit(f"/console/complaints/{planted.complaints[k]}", complaint_values(k), title=complaint_title(k))
        v.visit(f"/console/complaints/{planted.repeats[k]}", complaint_values(k, repeat=True),
                title=complaint_title(k, repeat=True))
    screenshot(page, "hostile-complaint-1280")
    v.visit(f"/console/digest?week={planted.week}", branches)
    v.visit(f"/console/digest?week={this_week()}", departments)
    v.visit("/console/model", [])
    v.assert_clean()


def test_the_api_letter_and_digest_in_html_show_hostile_text_as_text(open_page, hostile):
    live, planted = hostile
    page = open_page(1280, base_url=live.url)
    page.set_extra_http_headers(bearer(live.keys["admin"]))
    v = Visits(page)
    for k, letter in planted.letters.items():
        v.visit(f"/v1/letters/{letter}?format=html", letter_values(k, k in planted.resolved))
    v.visit(f"/v1/digests/weekly?week={planted.week}&format=html",
            [stored(fields_of(k)["branch"]) for k in planted.letters])
    v.assert_clean()


def test_departments_named_by_payloads_see_their_names_as_text(open_page, hostile):
    live, planted = hostile
    failures: list[str] = []
    for k in planted.letters:
        page = open_page(1280, base_url=live.url)
        browser_sign_in(page, live.key_for(department(k)))
        v = Visits(page)
        if page.locator(".who-name").inner_text() != department(k):
            failures.append(f"signed-in name {page.locator('.who-name').inner_text()!r}")
        v.check([department(k), stored(fields_of(k)["branch"])], f"inbox of department {k}")
        v.visit(f"/console/letters/{planted.letters[k]}", letter_values(k, k in planted.resolved))
        v.visit(f"/console/complaints/{planted.complaints[k]}", complaint_values(k), title=complaint_title(k))
        other = planted.letters[(k + 1) % len(planted.letters)]
        v.visit(f"/console/letters/{other}", [], status=404)
        failures += v.failures + v.dialogs
        page.context.close()
    assert not failures, "\n".join(failures)


def test_query_strings_and_refused_forms_echo_hostile_text_as_text(open_page, hostile):
    live, planted = hostile
    page = open_page(1280, base_url=live.url)
    v = Visits(page)
    for p in PAYLOADS:  # before signing in: the sign-in form keeps where to go next
        v.visit("/console/login?" + urlencode({"next": f"/console/{p}"}), [])
        if page.locator("input[name=next]").input_value() != f"/console/{p}":
            v.failures.append(f"next {page.locator('input[name=next]').input_value()!r}, expected /console/{p}")
    browser_sign_in(page, live.keys["protection"])
    v.visit("/console/?" + urlencode({"category": '"><svg onload=alert(1)>'}), ['"><svg onload=alert(1)>'])
    for p in PAYLOADS:
        v.visit("/console/?" + urlencode({"category": p, "status": p, "risk_level": p, "sort": p, "date_from": p}),
                [p.strip()])
        v.visit("/console/digest?" + urlencode({"week": p}), [], status=422)
    k = 3
    note = fields_of(k)["outcome_note"]
    for p in PAYLOADS:  # a category the form does not offer: refused, and the page shows what was sent
        page.goto(f"/console/complaints/{planted.complaints[k]}")
        page.locator("#o-category").evaluate("(el, p) => { el.add(new Option(p, p)); el.value = p; }", p)
        page.get_by_label("说明").fill(note)
        page.get_by_role("button", name="保存").click()
        page.wait_for_load_state()
        v.check([note.strip()], f"refused outcome with category {p!r}", title=complaint_title(k))
    screenshot(page, "hostile-refused-outcome-1280")
    v.assert_clean()
