"""The Keys & spend tab in real Chromium: an admin creates a virtual key, the key is used, and the tab shows its
spend, the keys and the rollouts' state; a user who is not an admin is told why they see no keys."""

from __future__ import annotations

import httpx
import pytest

from tests.stack import ADMIN_KEY
from tests.ui.test_chat_ui import ARGS, CHROMIUM

pytestmark = [pytest.mark.serve, pytest.mark.browser]


def _signed_in(p, stack, user: str, key: str):
    from pathlib import Path

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (scripts/system-deps.sh installs it)")
    browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.set_default_timeout(60_000)
    page.plot_warnings = []  # Vega's, when a plot got data it cannot draw (e.g. "Infinite extent for field")
    page.on("console", lambda m: page.plot_warnings.append(m.text) if "extent" in m.text else None)
    page.goto(stack.base_url + "/ui/")
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(key)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#chat-input textarea")
    page.get_by_role("tab", name="Keys & spend").click()
    return browser, page


def test_an_admin_creates_a_key_and_sees_its_spend_and_the_rollouts(serve_stack, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser, page = _signed_in(p, serve_stack, "admin", ADMIN_KEY)
        try:
            page.locator("#key-user input, #key-user textarea").first.fill("ui-user")
            page.locator("#key-create").click()
            created = page.locator("#key-created textarea, #key-created input").first
            expect(created).to_have_value(__import__("re").compile(r"^sk-cnd-"), timeout=60_000)
            key = created.input_value()
            r = httpx.post(serve_stack.base_url + "/v1/chat/completions", timeout=60,
                           headers={"Authorization": f"Bearer {key}"},
                           json={"model": "echo", "messages": [{"role": "user", "content": "from the ui"}]})
            assert r.status_code == 200
            for _ in range(30):  # spend rows are written in the background
                page.locator("#spend-refresh").click()
                page.wait_for_timeout(1000)
                if "ui-user" in page.locator("#spend-totals").inner_text():
                    break
            assert "ui-user" in page.locator("#spend-totals").inner_text()
            assert "ui-user" in page.locator("#keys-table").inner_text()
            assert "canaried" in page.locator("#rollouts-table").inner_text()
            assert not page.plot_warnings, page.plot_warnings  # the spend plots drew their bars
            page.wait_for_timeout(3000)
            page.screenshot(path=str(tmp_path / "keys-admin.png"))
        finally:
            browser.close()
        browser, page = _signed_in(p, serve_stack, "tester", serve_stack.api_key)
        try:
            page.locator("#spend-refresh").click()
            expect(page.locator("#spend-status")).to_contain_text("only an admin", timeout=60_000)
        finally:
            browser.close()
