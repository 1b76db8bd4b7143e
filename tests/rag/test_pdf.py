"""PDFs as they come: scanned pages (no text layer) read by OCR, ruled tables kept as Markdown rows, page numbers
on every chunk and citation, and files over the page-count or page-size limits refused (413 on upload)."""

from __future__ import annotations

import io

import httpx
import pytest

OCTET = {"content-type": "application/octet-stream"}
SCAN_LINES = ["Scanned service manual", "To reset the device hold the power",
              "button for ten seconds until the LED blinks red."]


def scanned_pdf(lines: list[str] = SCAN_LINES, noisy: bool = False, face: str = "DejaVuSans") -> bytes:
    """A page that is only a picture of text (what a scanner makes): no text layer at all. `noisy`: as an office
    scanner leaves it -- tilted 0.6 degrees, blurred, grainy, saved as a low-quality JPEG."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    font = ImageFont.truetype(f"/usr/share/fonts/truetype/dejavu/{face}.ttf", 28)
    img = Image.new("L", (1240, 1754), 255)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((100, 150 + 60 * i), line, fill=0, font=font)
    if noisy:
        img = img.rotate(0.6, fillcolor=255, resample=Image.BILINEAR).filter(ImageFilter.GaussianBlur(0.8))
        grain = np.random.default_rng(0).normal(0, 18, (img.height, img.width))
        img = Image.fromarray(np.clip(np.asarray(img, dtype=float) + grain, 0, 255).astype(np.uint8))
        jpeg = io.BytesIO()
        img.save(jpeg, "JPEG", quality=35)
        img = Image.open(jpeg)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "PDF", resolution=150)
    return buf.getvalue()


def table_pdf() -> bytes:
    """Two pages: a ruled table between two paragraphs, then a page of text."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.cell(0, 10, "Quarterly figures by region", new_x="LMARGIN", new_y="NEXT")
    with pdf.table() as t:
        for row in [("Region", "Revenue", "Growth"), ("North", "1200", "4%"), ("South", "950", "7%")]:
            r = t.row()
            for c in row:
                r.cell(c)
    pdf.cell(0, 10, "Figures are unaudited.", new_x="LMARGIN", new_y="NEXT")
    pdf.add_page()
    pdf.cell(0, 10, "The second page describes the zebra handshake protocol.")
    return bytes(pdf.output())


def blank_pdf(pages: int, size: float = 612.0) -> bytes:
    from pypdf import PdfWriter

    w = PdfWriter()
    for _ in range(pages):
        w.add_blank_page(size, size)
    buf = io.BytesIO()
    w.write(buf)
    return buf.getvalue()


def test_pypdf_sees_no_text_in_the_scan():
    from pypdf import PdfReader

    assert not "".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(scanned_pdf())).pages).strip()


def test_scanned_page_is_read_by_ocr():
    from apps.rag.parsers import parse_bytes

    doc = parse_bytes(scanned_pdf(), "scan.pdf")
    # words as words: the spaces the recogniser drops are put back from the gaps in the page's ink
    assert doc.text.strip().split("\n") == SCAN_LINES, doc.text
    assert doc.page_at(0) == 1


NOISY_LINES = ["Commit the staged changes with a message that says", "why the change was made, then push the branch",
               "to the shared remote so that others can review it.", "A rebase rewrites history and must not be used",
               "on commits that other people have already fetched."]


@pytest.mark.parametrize("face", ["DejaVuSerif", "DejaVuSansCondensed"])
def test_a_noisy_scan_reads_word_for_word(face):
    import difflib

    from apps.rag.parsers import parse_bytes

    text = parse_bytes(scanned_pdf(NOISY_LINES, noisy=True, face=face), "scan.pdf").text
    ref, got = " ".join(NOISY_LINES).split(), text.split()
    matched = sum(b.size for b in difflib.SequenceMatcher(None, ref, got, autojunk=False).get_matching_blocks())
    assert matched / len(ref) >= 0.9, text  # the boxes' own gaps read about half the words right


def test_scan_with_ocr_off_is_refused_with_its_reason():
    from apps.rag.parsers import ParseError, parse_bytes

    with pytest.raises(ParseError, match="no text layer on 1 page.*OCR is off"):
        parse_bytes(scanned_pdf(), "scan.pdf", {"ocr": False})


def test_table_keeps_its_rows_as_markdown_and_pages_are_numbered():
    from apps.rag.parsers import parse_bytes

    doc = parse_bytes(table_pdf(), "t.pdf")
    lines = doc.text.splitlines()
    assert "| Region | Revenue | Growth |" in lines and "| North | 1200 | 4% |" in lines, doc.text
    # reading order: the heading before the table, the note after it
    assert doc.text.index("Quarterly") < doc.text.index("| North") < doc.text.index("unaudited")
    assert doc.page_at(doc.text.index("zebra")) == 2 and doc.page_at(doc.text.index("North")) == 1


@pytest.mark.parametrize("pdf, reason", [(lambda: blank_pdf(2001), "2001 pages; the limit is 2000"),
                                         (lambda: blank_pdf(1, 200000), "200000 x 200000 points")])
def test_pdf_bombs_are_refused_before_drawing(pdf, reason):
    from apps.rag.parsers import DocumentTooLarge, parse_bytes

    with pytest.raises(DocumentTooLarge, match=reason):
        parse_bytes(pdf(), "bomb.pdf")


def test_upload_scanned_and_table_pdfs_then_cite_pages(rag_http, service):
    with httpx.Client(base_url=rag_http + "/v1/rag", timeout=120) as c:
        r = c.post("/kb/upload", params={"filename": "manual.pdf"}, headers=OCTET, content=scanned_pdf())
        assert r.status_code == 200, r.text
        r = c.post("/kb/upload", params={"filename": "figures.pdf"}, headers=OCTET, content=table_pdf())
        assert r.status_code == 200, r.text
        hit = c.post("/kb/search", json={"question": "how long do I hold the power button to reset", "k": 1}).json()
        assert hit["hits"][0]["source"].endswith("manual.pdf") and hit["hits"][0]["page"] == 1
        hit = c.post("/kb/search", json={"question": "zebra handshake", "k": 1}).json()["hits"][0]
        assert hit["source"].endswith("figures.pdf") and hit["page"] == 2
        hit = c.post("/kb/search", json={"question": "revenue of the North region", "k": 1}).json()["hits"][0]
        assert "| North | 1200 | 4% |" in hit["text"] and hit["page"] == 1


def test_upload_of_a_pdf_bomb_is_413_and_stores_nothing(rag_http, service, rag_config):
    from cluster.config import expand_path

    with httpx.Client(base_url=rag_http + "/v1/rag", timeout=120) as c:
        for pdf in (blank_pdf(2001), blank_pdf(1, 200000)):
            r = c.post("/kb/upload", params={"filename": "bomb.pdf"}, headers=OCTET, content=pdf)
            assert r.status_code == 413 and r.json()["error"]["code"] == "document_too_large", r.text
        uploads = expand_path(rag_config.rag.data_dir) / "uploads" / "kb"
        assert not uploads.exists() or not any(uploads.iterdir())
        r = c.post("/kb/upload", params={"filename": "locked.pdf"}, headers=OCTET, content=b"%PDF-1.4 garbage")
        assert r.status_code == 422 and "corrupt" in r.json()["error"]["message"], r.text
