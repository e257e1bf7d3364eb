"""The console in a real browser (Debian's Chromium, headless, through Playwright) against a real
uvicorn server: sign-in, the inbox, acknowledging a letter, another department refused, a
correction that `xiaobao export-labels` exports, the digest's charts, the narrow layout. Each test
leaves a screenshot under test-artifacts/."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter

import pytest

from tests.service.web.conftest import browser_sign_in, screenshot

pytestmark = pytest.mark.timeout(300)

NO_HORIZONTAL_SCROLL = "() => document.documentElement.scrollWidth <= window.innerWidth"


def _department_with_open_letter(live_server) -> tuple[str, dict]:
    """The department with the most letters, and one of its letters still awaiting acknowledgement."""
    counts = Counter(x["department"] for x in live_server.letters)
    for department, _ in counts.most_common():
        issued = [x for x in live_server.letters if x["department"] == department and x["status"] == "issued"]
        if issued:
            return department, issued[-1]
    pytest.fail("no letter awaits acknowledgement")


def test_a_department_opens_its_inbox_and_acknowledges_a_letter(open_page, live_server):
    department, letter = _department_with_open_letter(live_server)
    page = open_page(1280)
    browser_sign_in(page, live_server.key_for(department))
    assert page.locator(".who-name").inner_text() == department
    # The inbox lists this department's letters only, with the overdue / due-soon counts on top.
    numbers = page.locator("#letters tbody tr td:first-child a").all_inner_texts()
    own = {x["number"] for x in live_server.letters if x["department"] == department}
    assert numbers and set(numbers) <= own
    assert int(page.locator("#count-overdue").inner_text()) >= 0
    assert page.locator("#letters").get_by_text("职能部室").count() == 0  # no department column for a department
    screenshot(page, "inbox-department-1280")

    page.get_by_role("link", name=letter["number"], exact=True).click()
    page.wait_for_url(f"**/console/letters/{letter['id']}")
    assert page.locator("#letter-status").get_attribute("data-status") == "issued"
    # The letter itself, inside its shadow root: the document the API renders.
    assert page.locator("#letter-document h1").inner_text().replace(" ", "") == "投诉风险提示函"
    assert letter["number"] in page.locator("#letter-document .number").inner_text()
    page.get_by_label("签收说明").fill("已转客户经理核实，今日联系客户。")
    page.get_by_role("button", name="签收", exact=True).click()
    page.wait_for_url(f"**/console/letters/{letter['id']}?done=acknowledged")
    assert page.locator("#letter-status").get_attribute("data-status") == "acknowledged"
    assert page.locator("#letter-status").inner_text() == "已签收，处理中"
    history = page.locator("#history").inner_text()
    assert "发函" in history and "签收" in history and "已转客户经理核实" in history
    assert page.get_by_role("button", name="签收", exact=True).count() == 0  # acknowledged once only
    screenshot(page, "letter-acknowledged-1280")


def test_another_department_is_refused_the_letter(open_page, live_server):
    department, letter = _department_with_open_letter(live_server)
    other = next(d for d in ("办公室", "国际业务部", "信息科技部", "财富管理部") if d != department)
    page = open_page(1280)
    browser_sign_in(page, live_server.key_for(other))
    response = page.goto(f"/console/letters/{letter['id']}")
    assert response.status == 404
    assert "未找到" in page.locator("h1").inner_text()
    assert letter["number"] not in page.content()
    assert page.goto(f"/console/letters/{letter['id']}/document").status == 404
    screenshot(page, "letter-refused-other-department")


def test_a_corrected_category_is_what_export_labels_writes(open_page, live_server, tmp_path):
    page = open_page(1280)
    browser_sign_in(page, live_server.keys["protection"])
    item = live_server.letters[0]
    page.goto(f"/console/letters/{item['id']}")
    page.locator("aside a[href^='/console/complaints/']").first.click()
    page.wait_for_url("**/console/complaints/*")
    complaint_id = int(page.url.rsplit("/", 1)[1])
    predicted = page.locator("h3").first.inner_text().split("：", 1)[1]
    assert page.locator("#complaint-text mark.hl").count() > 0  # the phrases behind the prediction
    correction = "外汇" if predicted != "外汇" else "人民币管理"
    page.get_by_label("正确的业务类别").select_option(correction)
    page.get_by_label("未升级").check()
    page.get_by_label("说明").fill("经核实为跨境汇款问题。")
    page.get_by_role("button", name="保存").click()
    page.wait_for_url(f"**/console/complaints/{complaint_id}?done=saved")
    assert correction in page.locator("#current-labels").inner_text()
    screenshot(page, "complaint-corrected-1280")

    out = tmp_path / "labels.csv"
    subprocess.run([sys.executable, "-m", "xiaobao.cli", "export-labels", "--database-url", live_server.database_url,
                    "--out", str(out)], check=True, capture_output=True, timeout=120)
    with out.open(encoding="utf-8") as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    external_id = page.locator("h1 .h-sub").inner_text()
    assert rows[external_id]["category"] == correction
    assert rows[external_id]["escalated"] == "0"


def test_the_weekly_digest_shows_its_charts(open_page, live_server):
    page = open_page(1280)
    browser_sign_in(page, live_server.keys["protection"])
    page.get_by_role("link", name="周报").click()
    page.wait_for_url("**/console/digest")
    images = page.locator("#digest-document img.chart")
    assert images.count() >= 4
    for src in images.evaluate_all("els => els.map(e => e.getAttribute('src'))"):
        assert src.startswith("data:image/png;base64,")
    assert all(images.evaluate_all("els => els.map(e => e.complete && e.naturalWidth > 100)"))
    week = page.get_by_label("选择周次").input_value()
    assert page.get_by_role("link", name="下载 Excel").get_attribute("href") == f"/console/digest.xlsx?week={week}"
    screenshot(page, "digest-1280")
    page.get_by_role("link", name="上一周").click()
    page.wait_for_url("**/console/digest?week=*")
    assert page.get_by_label("选择周次").input_value() != week


def test_model_status_for_the_protection_department(open_page, live_server):
    page = open_page(1280)
    browser_sign_in(page, live_server.keys["protection"])
    page.get_by_role("link", name="模型状态").click()
    assert page.locator("#model-version").inner_text() not in ("", "未加载")
    assert page.locator("#drift tbody tr").count() == 4
    assert "macro-F1" in page.locator("#metrics").inner_text()
    screenshot(page, "model-1280")


def test_narrow_screens_have_no_horizontal_scroll(open_page, live_server):
    department, letter = _department_with_open_letter(live_server)
    page = open_page(390, 844)
    browser_sign_in(page, live_server.keys["protection"])
    pages = {"inbox": "/console/", "alerts": "/console/?view=alerts", "letter": f"/console/letters/{letter['id']}",
             "digest": "/console/digest", "model": "/console/model"}
    for name, path in pages.items():
        page.goto(path)
        assert page.evaluate(NO_HORIZONTAL_SCROLL), f"{name} scrolls sideways at 390 px"
        screenshot(page, f"{name}-390")
    page.goto(f"/console/letters/{letter['id']}")
    page.locator("aside a[href^='/console/complaints/']").first.click()
    page.wait_for_url("**/console/complaints/*")
    assert page.evaluate(NO_HORIZONTAL_SCROLL), "the complaint page scrolls sideways at 390 px"
    screenshot(page, "complaint-390")


def test_keyboard_skip_link_and_focus(open_page, live_server):
    page = open_page(1280)
    browser_sign_in(page, live_server.keys["protection"])
    page.keyboard.press("Tab")
    focused = page.evaluate("() => document.activeElement.textContent.trim()")
    assert focused == "跳到主要内容"
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", "")
    screenshot(page, "keyboard-skip-link-focused")
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"
    page.keyboard.press("Tab")  # the first control after the skip is inside main, not the header
    assert page.evaluate("() => !!document.activeElement.closest('main')")
    # Every form control on the inbox has a label.
    unlabelled = page.evaluate("""() => [...document.querySelectorAll(
        'main input:not([type=hidden]), main select, main textarea')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).length""")
    assert unlabelled == 0


def test_the_letter_prints_as_the_document_alone(open_page, live_server, tmp_path):
    _, letter = _department_with_open_letter(live_server)
    page = open_page(1280)
    browser_sign_in(page, live_server.keys["protection"])
    page.goto(f"/console/letters/{letter['id']}")
    page.emulate_media(media="print")
    assert not page.locator(".site-header").is_visible()
    assert not page.locator("aside.side").is_visible()
    assert page.locator("#letter-document h1").is_visible()
    screenshot(page, "letter-print-media")
    pdf = page.pdf(path=str(tmp_path / "letter.pdf"), format="A4", print_background=True)
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page") >= 1


def test_a_wrong_key_is_refused_at_sign_in(open_page, live_server):
    page = open_page(390, 844)
    page.goto("/console/")
    page.wait_for_url("**/console/login?next=*")
    page.get_by_label("访问密钥").fill("xb_wrong")
    page.get_by_role("button", name="登录").click()
    assert "密钥无效" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("访问密钥").get_attribute("aria-invalid") == "true"
    assert page.evaluate(NO_HORIZONTAL_SCROLL)
    screenshot(page, "login-refused-390")
