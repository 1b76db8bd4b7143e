"""Parsers and chunkers on real files (no embedder, no store): fast."""

from __future__ import annotations

import pytest

from apps.rag.chunking import chunk_document
from apps.rag.parsers import ParseError, parse_bytes
from tests.rag.conftest import HTML, MD, RST, make_pdf


def test_markdown_sections_offsets_and_code_fences():
    doc = parse_bytes(MD.encode(), "router.md")
    assert doc.title == "Zephyr Router Manual"
    heads = [s.heading for s in doc.sections]
    assert heads == ["Zephyr Router Manual", "Zephyr Router Manual > Installation",
                     "Zephyr Router Manual > Factory reset"]  # '# not a heading' in a code fence is not one
    reset = doc.sections[2]
    assert doc.text[reset.start:].startswith("## Factory reset")
    assert doc.text == MD  # markdown keeps the file's own text, so spans point into the file


def test_rst_levels_follow_adornment_order():
    doc = parse_bytes(RST.encode(), "garden.rst")
    assert [s.heading for s in doc.sections] == ["Gardening notes", "Gardening notes > Tomatoes",
                                                 "Gardening notes > Basil"]
    assert parse_bytes(RST.encode(), "x.rst.txt").kind == "rst"


def test_html_drops_scripts_and_keeps_headings():
    doc = parse_bytes(HTML.encode(), "kettle.html")
    assert "ignore me" not in doc.text
    assert doc.title == "Kettle FAQ"
    sec = next(s for s in doc.sections if s.heading.endswith("Descaling"))
    assert "white vinegar" in doc.text[sec.start:sec.end]


def test_pdf_text_and_pages():
    doc = parse_bytes(make_pdf("Invoice total due is 4200 euros."), "a.pdf")
    assert "4200 euros" in doc.text and doc.sections[0].heading == "page 1"


def test_encrypted_pdf_is_refused_with_reason():
    import io

    from pypdf import PdfReader, PdfWriter

    w = PdfWriter()
    for page in PdfReader(io.BytesIO(make_pdf("secret plans"))).pages:
        w.add_page(page)
    w.encrypt("hunter2")
    buf = io.BytesIO()
    w.write(buf)
    with pytest.raises(ParseError, match="encrypted"):
        parse_bytes(buf.getvalue(), "locked.pdf")


@pytest.mark.parametrize("data,name,reason", [
    (b"%PDF-1.4\nthis is not really a pdf", "broken.pdf", "corrupt|no extractable"),
    (b"", "empty.md", "empty"),
    (b"   \n\n", "blank.txt", "empty"),
    (bytes(range(256)) * 4, "binary.txt", "binary|UTF-8"),
    (b"hello", "image.png", "unsupported"),
])
def test_bad_files_raise_parse_error(data, name, reason):
    with pytest.raises(ParseError, match=reason):
        parse_bytes(data, name)


@pytest.mark.parametrize("strategy", ["fixed", "recursive", "structure"])
def test_chunks_have_exact_spans_and_respect_size(strategy):
    doc = parse_bytes(MD.encode(), "router.md")
    chunks = chunk_document(doc, strategy, size=120, overlap=20)
    assert len(chunks) >= 3
    for c in chunks:
        assert doc.text[c.start:c.end] == c.text
        assert len(c.text) <= 120
    covered = "".join(c.text for c in chunks)
    assert "QX-7741" in covered and "twelve seconds" in covered


def test_structure_chunks_carry_headings_into_text_and_metadata():
    doc = parse_bytes(MD.encode(), "router.md")
    chunks = chunk_document(doc, "structure", size=120, overlap=0)
    c = next(c for c in chunks if "QX-7741" in c.text)
    assert c.section == "Zephyr Router Manual > Factory reset"
    assert c.embed_text.startswith("Zephyr Router Manual > Factory reset\n")
    # structure chunks never straddle two sections
    assert all(doc.section_at(c.start) == doc.section_at(c.end - 1) for c in chunks)


def test_fixed_chunks_overlap():
    doc = parse_bytes(("word " * 400).encode(), "w.txt")
    chunks = chunk_document(doc, "fixed", size=200, overlap=50)
    assert all(b.start < a.end for a, b in zip(chunks, chunks[1:]))


def test_bad_chunk_settings():
    doc = parse_bytes(b"some text here", "a.txt")
    with pytest.raises(ValueError, match="unknown chunking"):
        chunk_document(doc, "semantic")
    with pytest.raises(ValueError, match="overlap"):
        chunk_document(doc, "fixed", size=100, overlap=100)
