"""`xiaobao serve | keys | db | export-labels`, run as a user would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from service.labels import COLUMNS
from tests.service.conftest import complaint_body
from xiaobao.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def url(settings) -> str:
    return settings.database_url


def test_keys_create_list_revoke(capsys, url, client):
    code, out, err = run(capsys, "keys", "create", "--name", "call-centre", "--scope", "intake", "--database-url", url)
    assert code == 0, err
    key = out.strip().splitlines()[-1]
    assert key.startswith("xb_")
    assert client.post("/v1/predict", json={"text": "信用卡"}, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    code, out, _ = run(capsys, "keys", "list", "--database-url", url)
    assert "call-centre" in out and "intake" in out and "active" in out and key not in out
    code, out, _ = run(capsys, "keys", "revoke", "--name", "call-centre", "--database-url", url)
    assert code == 0 and "revoked" in out
    code, out, _ = run(capsys, "keys", "list", "--database-url", url)
    assert "revoked" in out
    assert client.post("/v1/predict", json={"text": "信用卡"}, headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_keys_errors_are_one_line_exit_2(capsys, url):
    run(capsys, "keys", "create", "--name", "dup", "--scope", "admin", "--database-url", url)
    for argv in (("keys", "create", "--name", "dup", "--scope", "admin"),
                 ("keys", "create", "--name", "x", "--scope", "superuser"),
                 ("keys", "revoke", "--id", "999999")):
        code, _, err = run(capsys, *argv, "--database-url", url)
        assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("xiaobao keys: "), err


def test_keys_ensure_reuses_a_valid_key(capsys, url, tmp_path):
    path = tmp_path / "demo-key.txt"
    code, out, _ = run(capsys, "keys", "ensure", "--name", "demo", "--scope", "admin", "--file", path, "--database-url", url)
    first = out.strip().splitlines()[-1]
    assert code == 0 and path.read_text().strip() == first and oct(path.stat().st_mode)[-3:] == "600"
    code, out, _ = run(capsys, "keys", "ensure", "--name", "demo", "--scope", "admin", "--file", path, "--database-url", url)
    assert out.strip().splitlines()[-1] == first
    run(capsys, "keys", "revoke", "--name", "demo", "--database-url", url)
    code, out, _ = run(capsys, "keys", "ensure", "--name", "demo", "--scope", "admin", "--file", path, "--database-url", url)
    second = out.strip().splitlines()[-1]
    assert code == 0 and second != first and path.read_text().strip() == second and "demo-2" in out


def test_db_upgrade_and_current(capsys, tmp_path):
    url = f"sqlite:///{tmp_path}/cli.db"
    code, out, _ = run(capsys, "db", "current", "--database-url", url)
    assert code == 0 and "revision None" in out
    code, out, _ = run(capsys, "db", "upgrade", "--database-url", url)
    assert code == 0 and "(latest)" in out


def test_unreachable_database_is_one_line_exit_2(capsys):
    code, _, err = run(capsys, "db", "upgrade", "--database-url", "postgresql://postgres@127.0.0.1:1/none")
    assert code == 2 and "unreachable" in err and len(err.strip().splitlines()) == 1


def test_bad_settings_are_one_line_exit_2(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("XIAOBAO_MAX_TEXT_CHARS", "-5")
    code, _, err = run(capsys, "db", "current", "--database-url", f"sqlite:///{tmp_path}/x.db")
    assert code == 2 and "max_text_chars" in err and len(err.strip().splitlines()) == 1


def test_export_with_no_outcomes_says_so(capsys, url, tmp_path):
    code, _, err = run(capsys, "export-labels", "--out", tmp_path / "labels.csv", "--database-url", url)
    assert code == 2 and "no outcomes" in err
    code, _, err = run(capsys, "export-labels", "--out", tmp_path / "labels.txt", "--database-url", url)
    assert code == 2 and ".csv" in err


def test_exported_labels_train_a_model(capsys, client, h, url, corpus, tmp_path):
    """The retraining loop: intake → outcomes → export-labels → xiaobao train."""
    rows = corpus.sample(160, random_state=3).reset_index(drop=True)
    items = [complaint_body(r) for _, r in rows.iterrows()]
    results = []
    for start in range(0, len(items), 80):
        r = client.post("/v1/complaints/batch", json={"items": items[start:start + 80]}, headers=h["intake"])
        assert r.status_code == 201, r.text[:300]
        results += r.json()["items"]
    for i, (result, (_, row)) in enumerate(zip(results, rows.iterrows(), strict=True)):
        if i % 4 == 3:
            continue  # no feedback: not exported
        predicted = result["prediction"]
        feedback = {"escalated": row["escalated"] == "1"}
        if predicted["category"]["label"] == row["category"] and predicted["cause"]["label"] == row["cause"]:
            feedback["confirmed"] = True
        else:
            feedback.update(category=row["category"], cause=row["cause"])
        assert client.post(f"/v1/complaints/{result['id']}/outcome", json=feedback, headers=h["protection"]).status_code == 201
    client.post(f"/v1/complaints/{results[3]['id']}/outcome", json={"note": "已回访"}, headers=h["protection"])

    out = tmp_path / "labels.csv"
    code, _, err = run(capsys, "export-labels", "--out", out, "--database-url", url)
    assert code == 0, err
    exported = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(exported.columns) == COLUMNS and len(exported) == 120
    truth = rows.set_index("id")
    for _, e in exported.iterrows():
        t = truth.loc[e["id"]]
        assert (e["category"], e["cause"], e["escalated"]) == (t["category"], t["cause"], t["escalated"])
        assert (e["channel"], e["branch"], e["received_at"], e["repeat_count"]) == (
            t["channel"], t["branch"], t["received_at"], t["repeat_count"])
    assert "C" in "".join(exported["customer_ref"])  # fields travel with the labels

    code, out_json, err = run(capsys, "train", "--data", out, "--registry", tmp_path / "reg", "--quiet")
    assert code == 0, err
    assert '"version"' in out_json


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_starts_the_service(trained_registry, tmp_path, workers):
    """With --workers 2, uvicorn's worker processes get --database-url too (through their environment)."""
    registry, _ = trained_registry
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("XIAOBAO_DATABASE_URL", "DATABASE_URL")}
    env["XIAOBAO_REGISTRY"] = str(registry.root)
    xiaobao = Path(sys.executable).parent / "xiaobao"
    proc = subprocess.Popen([str(xiaobao), "serve", "--port", str(port), "--database-url", f"sqlite:///{tmp_path}/s.db",
                             "--workers", str(workers)],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "the service did not start within 60 s"
                time.sleep(0.2)
        assert r.status_code == 200 and r.json()["model_version"] == registry.current()
        assert httpx.get(f"http://127.0.0.1:{port}/docs").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/openapi.json").json()["info"]["title"] == "消保预警 API"
        assert (tmp_path / "s.db").is_file() and not (tmp_path / "var").exists()  # no process fell back to the default
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_routing_check_validates_the_file_and_shows_where_a_request_goes(capsys, tmp_path):
    code, out, err = run(capsys, "routing", "check", "--category", "信用卡", "--cause", "定价收费", "--channel", "电话客服")
    assert code == 0, err
    assert "valid" in out and "→ 信用卡中心" in out
    code, out, err = run(capsys, "routing", "check", "--cause", "消费者信息安全", "--category", "信用卡")
    assert "→ 信息科技部" in out  # the cause rule comes before the category rules

    mine = tmp_path / "routing.yaml"
    shipped = (Path(__file__).resolve().parents[2] / "service" / "resources" / "routing.yaml").read_text("utf-8")
    mine.write_text(shipped.replace("department: 信用卡中心", "department: 信用卡中"), encoding="utf-8")
    code, out, err = run(capsys, "routing", "check", "--file", mine)
    assert code == 2 and "信用卡中" in err and len(err.strip().splitlines()) == 1


def test_routing_check_names_the_calendar_and_refuses_an_uncovered_year(capsys, tmp_path, monkeypatch):
    from datetime import UTC, datetime

    from service.clock import SystemClock

    monkeypatch.setattr(SystemClock, "now", lambda self: datetime(2026, 6, 1, 2, 0, tzinfo=UTC))
    code, out, err = run(capsys, "routing", "check")
    assert code == 0, err
    assert "chinesecalendar" in out and "2004-2026" in out and "warning" not in out
    monkeypatch.setattr(SystemClock, "now", lambda self: datetime(2026, 12, 4, 2, 0, tzinfo=UTC))
    code, out, err = run(capsys, "routing", "check")
    assert code == 0 and "warning: " in out and "does not cover 2027" in out  # near the year's end
    monkeypatch.setattr(SystemClock, "now", lambda self: datetime(2027, 3, 1, 2, 0, tzinfo=UTC))
    code, out, err = run(capsys, "routing", "check")
    assert code == 2 and not out and len(err.strip().splitlines()) == 1
    assert "does not cover 2027" in err and "calendar.years" in err
    mine = tmp_path / "routing.yaml"
    shipped = (Path(__file__).resolve().parents[2] / "service" / "resources" / "routing.yaml").read_text("utf-8")
    mine.write_text(shipped.replace("calendar:\n  holidays: []", "calendar:\n  years: [2027]\n  holidays: [2027-01-01]"),
                    encoding="utf-8")
    code, out, err = run(capsys, "routing", "check", "--file", mine)
    assert code == 0, err
    assert "declaring 2027" in out and "1 holidays" in out


def test_routing_check_refuses_an_unknown_label(capsys):
    code, out, err = run(capsys, "routing", "check", "--cause", "收费")
    assert code == 2 and "'收费' is not a known cause" in err and not out
