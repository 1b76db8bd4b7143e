"""A person's path through the UI: real Chromium (Playwright) against the Gradio app mounted at /ui."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.serve, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def page(serve_stack, tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (scripts/system-deps.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        pg.set_default_timeout(60_000)
        pg.goto(serve_stack.base_url + "/ui/")
        # Keys are required in the test stack: the UI asks for one (any user name, the key as password).
        pg.get_by_label("username").fill("tester")
        pg.get_by_label("password").fill(serve_stack.api_key)
        pg.get_by_role("button", name="Login").click()
        pg.wait_for_selector("#chat-input textarea")
        yield pg
        out = tmp_path_factory.getbasetemp() / "ui-chat.png"
        pg.screenshot(path=str(out), full_page=True)
        browser.close()


def test_ui_rejects_wrong_key(serve_stack):
    import httpx

    r = httpx.post(serve_stack.base_url + "/ui/login", data={"username": "x", "password": "wrong"})
    assert r.status_code in (400, 401)


def test_chat_streams_an_answer_and_names_the_backend(page):
    page.fill("#chat-input textarea", "What is the capital of France?")
    page.click("#chat-send")
    # The status line changes from "answering" to "answered by backend ..." when the stream ends.
    page.wait_for_selector("#chat-backend :text('answered by backend')", timeout=90_000)
    assert "smollm2-llamacpp" in page.inner_text("#chat-backend")
    bubbles = page.locator("#chat-box .message")
    assert bubbles.count() >= 2
    answer = bubbles.nth(bubbles.count() - 1).inner_text().strip()
    assert answer and "⚠️" not in answer
