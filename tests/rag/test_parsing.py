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


# A documentation page as Sphinx and most site generators write one: navigation above and beside the content,
# a footer, permalink marks on headings, and a reference page that opens with a synopsis and its contents list.
DOC_PAGE = """<html><head><title>kettlectl - Kettle Manual</title></head><body>
<div class="related" role="navigation"><ul><li><a href="index.html">index</a></li><li><a href="next.html">next</a>
</li><li>Kettle 2.1 Documentation &raquo;</li></ul></div>
<header><a href="/">Kettle Docs home</a></header>
<div class="sphinxsidebar" role="navigation"><h3>Quick search</h3><p><a href="a.html">Descaling</a></p></div>
<div class="body" role="main">
<h1>kettlectl<a class="headerlink" href="#k">&para;</a></h1>
<pre>kettlectl [--boil] [--keep-warm MINUTES] [--descale]</pre>
<div class="toc"><p><a href="#a">Options</a> <a href="#b">Descaling</a> <a href="#c">Limits</a></p></div>
<p>kettlectl controls the kettle from a terminal: it boils water and keeps it warm.</p>
<table><tr><td>--boil</td><td>boil now</td></tr></table>
<h2>Descaling</h2><p>Boil a mix of water and white vinegar, then rinse twice.</p>
</div>
<div class="footer" role="contentinfo">&copy; Kettle Inc. Last updated on Dec 01.</div>
</body></html>"""


def test_html_keeps_the_content_and_leaves_the_page_chrome_out():
    doc = parse_bytes(DOC_PAGE.encode(), "kettlectl.html")
    assert doc.text.startswith("kettlectl\n")  # the content element's text, from its first heading
    for chrome in ("index", "Documentation", "Quick search", "Kettle Docs home", "Kettle Inc", "\u00b6"):
        assert chrome not in doc.text, chrome
    assert "white vinegar" in doc.text and "--keep-warm" in doc.text  # code and tables stay in the text
    assert [s.heading for s in doc.sections] == ["kettlectl", "kettlectl > Descaling"]


def test_a_heading_with_inline_markup_is_one_heading():
    doc = parse_bytes(b"<html><body><h1><code>abc</code> \xe2\x80\x94 Abstract <em>Base</em> Classes</h1><p>Text.</p>"
                      b"<h2>Using <code>ABCMeta</code></h2><p>More.</p></body></html>", "abc.html")
    assert [s.heading for s in doc.sections] == ["abc \u2014 Abstract Base Classes",
                                                 "abc \u2014 Abstract Base Classes > Using ABCMeta"]
    nested = parse_bytes(b"<h1>Setup <h2>steps</h2></h1><p>Plug it in.</p>", "bad.html")  # invalid, seen in the wild
    assert [s.heading for s in nested.sections] == ["Setup steps"] and "Plug it in." in nested.text


def test_nul_characters_in_a_page_neither_break_nor_forge_its_outline():
    doc = parse_bytes(b'<meta charset="utf-8"><h1>Kettle\x00</h1><p>\x00word \x00\x00 more</p><p>\x002\x00</p>'
                      b"<p>Fake?</p>", "nul.html")  # declared UTF-8: NUL characters in the text, not UTF-16
    assert [s.heading for s in doc.sections] == ["Kettle"]  # "\x002\x00" is no heading marker
    assert doc.text == "Kettle\nword  more\n2\nFake?\n"
    utf16 = "<html><body><h1>T\u00e9l\u00e9</h1><p>caf\u00e9</p></body></html>".encode("utf-16")  # NUL bytes, no NULs
    assert parse_bytes(utf16, "u16.html").text == "T\u00e9l\u00e9\ncaf\u00e9\n"


def test_a_page_that_is_all_banner_keeps_its_text():
    doc = parse_bytes(b"<html><body><header><h1>Closed today</h1><p>Back on Monday.</p></header></body></html>",
                      "notice.html")
    assert doc.text == "Closed today\nBack on Monday.\n"


def test_html_summary_is_the_opening_prose():
    """The document vector's text: sentences, not the synopsis, the contents list or a table."""
    doc = parse_bytes(DOC_PAGE.encode(), "kettlectl.html")
    assert doc.summary.startswith("kettlectl controls the kettle from a terminal")
    assert "--keep-warm" not in doc.summary and "boil now" not in doc.summary and "Options" not in doc.summary
    assert parse_bytes(HTML.encode(), "kettle.html").summary.startswith("Questions about the electric kettle.")
    assert parse_bytes(MD.encode(), "router.md").summary == ""  # other formats: the ingester uses the opening


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


def test_every_chunk_carries_its_documents_lead_sentence_unless_the_lead_would_outweigh_it():
    from apps.rag.chunking import lead_sentence

    page = parse_bytes(DOC_PAGE.encode(), "kettlectl.html")  # the lead comes from the page's prose, not its chrome
    assert lead_sentence(page) == "kettlectl controls the kettle from a terminal: it boils water and keeps it warm."
    lead = "The Zephyr router connects a small office to the internet over one modem."
    body = "Hold the reset pin for twelve seconds, then wait until the green light blinks twice. " * 3
    manual = parse_bytes(f"# Zephyr\n\n{lead}\n\n## Reset\n\n{body}\n\n## Notes\n\nShort.\n".encode(), "z.md")
    assert lead_sentence(manual) == lead
    chunks = {c.section.split(" > ")[-1]: c for c in chunk_document(manual, "structure", size=800, overlap=0)}
    assert chunks["Reset"].embed_text.startswith(f"{lead}\nZephyr > Reset\n")  # deep in the page, it says which page
    assert lead not in chunks["Notes"].embed_text  # "Short." would be embedded as the lead itself
    assert chunks["Zephyr"].embed_text.count(lead) == 1  # the chunk the lead comes from says it once
    # a long opening line is cut at its first sentence end; a document of short lines has no lead
    long = parse_bytes(("A" * 50 + ". Then more words follow on the same line. " * 5).encode(), "long.txt")
    assert lead_sentence(long) == "A" * 50 + "."
    short = parse_bytes(b"one\ntwo\nthree\n", "short.txt")
    assert lead_sentence(short) == ""
