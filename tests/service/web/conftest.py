"""Console fixtures: sign-in helpers for TestClient, and for the browser tests a real uvicorn server
on a free 127.0.0.1 port (its own thread, a temporary SQLite database, the session's trained model)
with demo data sent through the intake API, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import create_key
from service.db import Database
from service.settings import Settings
from tests.service.web.seed import seed

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def sign_in(client: TestClient, key: str) -> str:
    """Signs `client` in with `key` (a fresh cookie jar) and returns the session's CSRF token."""
    client.cookies.clear()
    page = client.get("/console/login")
    assert page.status_code == 200
    done = client.post("/console/login", data={"key": key, "csrf_token": csrf_of(page.text), "next": "/console/"},
                       follow_redirects=False)
    assert done.status_code == 303, done.text[:500]
    return csrf_of(client.get("/console/").text)


# --- a live server for the browser --------------------------------------------------------------------
@dataclass
class LiveServer:
    url: str
    db: Database
    database_url: str
    keys: dict[str, str] = field(default_factory=dict)
    letters: list[dict] = field(default_factory=list)  # as GET /v1/letters lists them

    def key_for(self, department: str) -> str:
        if department not in self.keys:
            with self.db.transaction() as session:
                _, self.keys[department] = create_key(session, f"web-{len(self.keys)}", f"department:{department}")
        return self.keys[department]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(settings: Settings, holder) -> Iterator[LiveServer]:
    """The app for `settings` served by uvicorn on a free port in its own thread, with an intake,
    an admin and a protection key; stopped (and its database released) afterwards."""
    db = Database(settings.database_url)
    app = create_app(settings, database=db, model=holder)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="console-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the console server did not start"
            time.sleep(0.05)
        live = LiveServer(f"http://127.0.0.1:{port}", db, settings.database_url)
        with db.transaction() as session:
            for scope in ("intake", "admin", "protection"):
                _, live.keys[scope] = create_key(session, f"web-{scope}", scope)
        yield live
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        db.dispose()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory, trained_registry, holder, corpus) -> Iterator[LiveServer]:
    registry, _ = trained_registry
    url = f"sqlite:///{tmp_path_factory.mktemp('console')}/console.db"
    with serving(Settings(database_url=url, registry=registry.root, group_window_minutes=0), holder) as live:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            intake = {"Authorization": f"Bearer {live.keys['intake']}"}

            def post(body: dict) -> dict:
                response = http.post("/v1/complaints", json=body, headers=intake)
                assert response.status_code == 201, response.text
                return response.json()

            seed(post, corpus)
            listed = http.get("/v1/letters", params={"limit": 200},
                              headers={"Authorization": f"Bearer {live.keys['admin']}"})
            live.letters = listed.json()["items"]
        assert live.letters, "the seeded referrals raised no letter"
        yield live


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser, request):
    """`open_page(width=1280)`: a page in a fresh browser context (its own cookies) at that width, on
    `live_server` unless `base_url` names another server."""
    contexts = []

    def make(width: int = 1280, height: int = 900, base_url: str | None = None):
        base_url = base_url or request.getfixturevalue("live_server").url
        context = browser.new_context(viewport={"width": width, "height": height}, base_url=base_url,
                                      locale="zh-CN")
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def browser_sign_in(page, key: str) -> None:
    """Signs in through the form, with the keyboard, as a person would."""
    page.goto("/console/login")
    page.get_by_label("访问密钥").fill(key)
    page.get_by_label("访问密钥").press("Enter")
    page.wait_for_url("**/console/")


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def console_client(app) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
