"""A person's path through the UI: real Chromium (Playwright) against the Gradio app mounted at /ui."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.stack import OTHER_KEY

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


def _pdf(path: Path, lines: list[str], pad_bytes: int) -> Path:
    """A real one-page PDF with a text layer, padded to size with an (unreferenced) incompressible stream."""
    import os

    text = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({l}) '" for l in lines) + " ET"
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
            b"/Contents 5 0 R >>", b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            f"<< /Length {len(text)} >>\nstream\n{text}\nendstream".encode()]
    pad = os.urandom(pad_bytes)
    objs.append(f"<< /Length {len(pad)} >>\nstream\n".encode() + pad + b"\nendstream")
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
    return path


def test_documents_tab_ingests_a_5mb_pdf_and_answers_from_it(page, serve_stack, tmp_path):
    pdf = _pdf(tmp_path / "manual.pdf", ["The Quokka 3000 blender resets when you hold the pulse button",
                                         "for twelve seconds. The jar is dishwasher safe."], 5 * 1024 * 1024)
    assert pdf.stat().st_size > 5_000_000
    page.get_by_role("tab", name="Documents").click()
    page.fill("#rag-collection input", "pdfdocs")
    page.set_input_files("#rag-files input[type=file]", str(pdf))
    page.wait_for_timeout(1500)  # the upload to Gradio finishes before Ingest reads it
    page.click("#rag-ingest")
    page.wait_for_selector("#rag-ingest-out :text('chunks')", timeout=180_000)
    assert "manual.pdf" in page.inner_text("#rag-ingest-out")
    # The tab acted for the signed-in user: the collection is tester's, as if made with tester's key.
    with serve_stack.http() as me, serve_stack.http(key=OTHER_KEY) as other:
        assert "pdfdocs" in [c["name"] for c in me.get("/v1/rag/collections").json()["collections"]]
        assert "pdfdocs" not in [c["name"] for c in other.get("/v1/rag/collections").json()["collections"]]
    page.fill("#rag-question textarea", "How do I reset the Quokka blender?")
    page.click("#rag-ask")
    page.wait_for_selector("#rag-citations :text('manual.pdf')", timeout=180_000)  # sources come first
    page.wait_for_function("document.querySelector('#rag-answer').innerText.trim().length > 0", timeout=180_000)
    assert page.inner_text("#rag-answer").strip()


def test_documents_tab_reads_a_scanned_pdf_and_a_table_and_cites_pages(page, serve_stack, tmp_path):
    from tests.rag.test_pdf import scanned_pdf, table_pdf

    (tmp_path / "scan.pdf").write_bytes(scanned_pdf())  # a picture of text: read by OCR
    (tmp_path / "figures.pdf").write_bytes(table_pdf())  # a ruled table on page 1, text on page 2
    page.reload()  # a clean tab: the module's page still holds the last test's collection, files and answer
    page.wait_for_selector("#chat-input textarea")
    page.get_by_role("tab", name="Documents").click()
    page.fill("#rag-collection input", "scans")
    page.press("#rag-collection input", "Enter")  # a typed name is the dropdown's value once committed
    page.set_input_files("#rag-files input[type=file]", [str(tmp_path / "scan.pdf"), str(tmp_path / "figures.pdf")])
    page.wait_for_timeout(1500)
    page.click("#rag-ingest")
    page.wait_for_function("(t => /scan\\.pdf: \\d+ chunks/.test(t) && /figures\\.pdf: \\d+ chunks/.test(t))("
                           "document.querySelector('#rag-ingest-out').innerText)", timeout=300_000)
    assert "skipped" not in page.inner_text("#rag-ingest-out")
    with serve_stack.http() as me:
        docs = me.post("/v1/rag/scans/search", json={"question": "power button", "k": 5}).json()["documents"]
    assert {os.path.basename(d["source"]) for d in docs} == {"scan.pdf", "figures.pdf"}
    mark = _ask_and_open(page, "How long do I hold the power button to reset the device?", "scan.pdf#page=1",
                         "seconds")
    assert "page 1" in page.content() and "seconds" in mark
    mark = _ask_and_open(page, "What was the revenue of the North region?", "figures.pdf#page=1", "North")
    assert "| North | 1200 | 4% |" in mark


def _ask_and_open(page, question: str, citation: str, expect: str) -> str:
    """Ask, wait for the whole answer (its grounding line, or an error), open the citation -> the highlighted text.

    The citation must not be in the previous answer's list: its arrival is what says the new answer has begun (the
    sources come first and clear the answer box)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    assert citation not in page.inner_text("#rag-citations")
    page.fill("#rag-question textarea", question)
    page.click("#rag-ask")
    try:  # 300 s: the Ask click queues behind the previous answer if it is still streaming (one at a time)
        page.wait_for_selector(f"#rag-citations :text('{citation}')", timeout=300_000)
        page.wait_for_function("/supported by the cited passages|not grounded|error:/.test("
                               "document.querySelector('#rag-answer').innerText)", timeout=180_000)
    except PlaywrightTimeout:
        raise AssertionError(f"answer: {page.inner_text('#rag-answer')!r}; "
                             f"citations: {page.inner_text('#rag-citations')!r}") from None
    page.locator("#rag-citations label", has_text=citation).first.click()
    page.wait_for_selector(f"mark:has-text('{expect}')", timeout=60_000)
    return page.inner_text("mark")


def test_system_tab_shows_deployments_when_opened(page):
    page.get_by_role("tab", name="System").click()
    page.wait_for_selector("text=Gateway", timeout=60_000)
    assert "RUNNING" in page.content() or "HEALTHY" in page.content()
