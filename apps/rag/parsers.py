"""Document parsers: file bytes -> plain text plus a section outline with character offsets into that text.

Markdown, reStructuredText and plain text keep the file's own text (so a citation's character span points into the
file itself); HTML (BeautifulSoup) and PDF (apps/rag/pdf.py: text layer, OCR, tables) become extracted text
with headings / pages as sections.
A file that cannot be used raises `ParseError` with a one-line reason; ingestion skips it and reports the reason.
"""

from __future__ import annotations

import bisect
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPPORTED = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text", ".rst": "rst",
             ".html": "html", ".htm": "html", ".pdf": "pdf"}
# A kind's parser version, raised when that parser changes the text, outline or summary it extracts: ingestion then
# reads every document of that kind again, once, and its old passages go only after the new ones are stored
# (apps/rag/ingest.py document_hash). 1 for a kind not listed. html 2: page chrome dropped, prose summary, whole
# headings (2026-12-07).
PARSER_VERSIONS = {"html": 2}


from apps.rag.errors import DocumentTooLarge, ParseError  # noqa: F401  (re-exported: callers catch them here)


@dataclass
class Section:
    start: int
    end: int
    heading: str  # "Title > Sub > Subsub"


@dataclass
class ParsedDoc:
    text: str
    kind: str
    title: str = ""
    sections: list[Section] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)  # PDF: offset where each page starts (page n at index n-1)
    summary: str = ""  # the opening prose (HTML: paragraphs, no code blocks or tables); "" = the text's opening

    def page_at(self, offset: int) -> int | None:
        """The 1-based page holding `offset` (PDFs), else None."""
        if not self.pages:
            return None
        return bisect.bisect_right(self.pages, offset) or 1

    def section_at(self, offset: int) -> str:
        for s in self.sections:
            if s.start <= offset < s.end:
                return s.heading
        return ""


def kind_of(path: str | Path) -> str | None:
    name = str(path).lower()
    if name.endswith(".rst.txt"):  # Sphinx's copied sources, e.g. the Python docs' _sources/
        return "rst"
    return SUPPORTED.get(Path(name).suffix)


def parse_bytes(data: bytes, path: str | Path, pdf_limits: dict[str, Any] | None = None) -> ParsedDoc:
    kind = kind_of(path)
    if kind is None:
        raise ParseError(f"unsupported file type {Path(path).suffix or '(none)'!r}")
    if not data.strip():
        raise ParseError("empty file")
    if kind == "pdf":
        doc = _pdf(data, pdf_limits)
    else:
        doc = {"markdown": _markdown, "text": _text, "rst": _rst, "html": _html}[kind](data)
    if not doc.text.strip():
        raise ParseError("no extractable text")
    doc.title = doc.title or Path(path).name
    return doc


def _decode(data: bytes) -> str:
    # A NUL byte or invalid UTF-8 means a binary file with a text name: refuse rather than index garbage.
    if b"\x00" in data[:8192]:
        raise ParseError("binary content in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ParseError("not valid UTF-8 text (binary file?)") from None


def _outline(text: str, heads: list[tuple[int, int, str]]) -> list[Section]:
    """heads: (offset, level, title) in order -> sections spanning to the next heading, with the heading path."""
    sections, stack = [], []  # stack of (level, title)
    if heads and heads[0][0] > 0:
        sections.append(Section(0, heads[0][0], ""))
    for i, (off, level, title) in enumerate(heads):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        end = heads[i + 1][0] if i + 1 < len(heads) else len(text)
        sections.append(Section(off, end, " > ".join(t for _, t in stack)))
    if not sections:
        sections.append(Section(0, len(text), ""))
    return sections


def _line_offsets(text: str) -> list[int]:
    offs, pos = [], 0
    for line in text.splitlines(keepends=True):
        offs.append(pos)
        pos += len(line)
    offs.append(pos)
    return offs


def _text(data: bytes) -> ParsedDoc:
    text = _decode(data)
    return ParsedDoc(text, "text", sections=[Section(0, len(text), "")])


def _markdown(data: bytes) -> ParsedDoc:
    from markdown_it import MarkdownIt  # a real CommonMark parser: '#' inside code fences is not a heading

    text = _decode(data)
    offs = _line_offsets(text)
    tokens = MarkdownIt("commonmark").parse(text)
    heads = []
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and tok.map:
            heads.append((offs[tok.map[0]], int(tok.tag[1]), tokens[i + 1].content.strip()))
    title = next((t for _, lvl, t in heads if lvl == 1), "")
    return ParsedDoc(text, "markdown", title, _outline(text, heads))


_RST_ADORN = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}\s*$")


def _rst(data: bytes) -> ParsedDoc:
    """reST section titles are a text line underlined (optionally overlined) by a repeated punctuation char; the
    level is the order in which each adornment style first appears (the reST spec's rule)."""
    text = _decode(data)
    lines = text.splitlines()
    offs = _line_offsets(text)
    styles: list[tuple[str, bool]] = []
    heads = []
    for i in range(1, len(lines)):
        m = _RST_ADORN.match(lines[i])
        title = lines[i - 1].strip()
        if not m or not title or _RST_ADORN.match(lines[i - 1]) or len(lines[i].rstrip()) < len(title):
            continue
        over = i >= 2 and lines[i - 2].strip() == lines[i].strip()
        style = (m.group(1), over)
        if style not in styles:
            styles.append(style)
        heads.append((offs[i - 2] if over else offs[i - 1], styles.index(style) + 1, title))
    title = heads[0][2] if heads else ""
    return ParsedDoc(text, "rst", title, _outline(text, heads))


# Page chrome rather than content: site navigation, banners, sidebars, footers, search boxes. A manual's pages
# repeat it on every page, so left in it is the first thing in every page's text (the Python docs open with
# "Navigation index modules | next | previous | Python » 3.11 Documentation »").
_CHROME_ROLES = ("navigation", "banner", "contentinfo", "complementary", "search")
_PROSE = ("p", "dd")  # paragraphs and definition bodies: what a page says in sentences
SUMMARY_CHARS = 400  # a document's title plus this much of its opening prose is its dense vector


def _strip_chrome(soup: Any) -> Any:
    """The page's content element with chrome removed: `<main>` / `role="main"` when the page has exactly one.
    One walk over the tags: a large reference page has tens of thousands, and each `find_all` is a walk."""
    drop, mains, role_mains = [], [], []
    for tag in soup.find_all(True):
        role = tag.get("role")
        if tag.name in ("nav", "aside") or role in _CHROME_ROLES or (
                tag.name == "a" and "headerlink" in (tag.get("class") or ())):
            drop.append(tag)
        elif tag.name in ("header", "footer") and not tag.find_parent(["main", "article", "section"]):
            drop.append(tag)  # a page's header/footer; an article's own header keeps its title
        elif tag.name == "main":
            mains.append(tag)
        elif role == "main":
            role_mains.append(tag)
    for tag in drop:
        if not tag.decomposed:  # a tag inside one dropped before went with it
            tag.decompose()
    main = [t for t in mains or role_mains if not t.decomposed]
    return main[0] if len(main) == 1 else soup


def _prose_summary(root: Any, limit: int = SUMMARY_CHARS) -> str:
    """The first paragraphs of prose, up to `limit` characters: what the page says it is about, without the
    synopsis, code, tables and contents lists that often open a reference page (a git manual page opens with its
    SYNOPSIS, the Git user manual with its table of contents)."""
    out = ""
    for el in root.find_all(_PROSE):
        if el.find_parent([*_PROSE, "pre", "table", "code"]):  # one walk up: nested prose, or code and tables
            continue
        text = " ".join(el.get_text(" ", strip=True).split())
        links = sum(len(a.get_text(" ", strip=True)) for a in el.find_all("a"))
        if text and links <= len(text) / 2:  # mostly links: a table of contents, not prose
            out += text + "\n"
        if len(out) >= limit:
            break
    return out[:limit].strip()


def _html(data: bytes) -> ParsedDoc:
    doc = _html_doc(data, keep_chrome=False)
    # A page that is all "chrome" (its text in a banner, say) is still a page: keep everything rather than nothing.
    return doc if doc.text.strip() else _html_doc(data, keep_chrome=True)


def _html_doc(data: bytes, keep_chrome: bool) -> ParsedDoc:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    if b"\x00" in data:  # NUL marks headings below; in a page's own text it is no character (and broke the outline)
        for text in soup.find_all(string=lambda t: "\x00" in t):
            text.replace_with(type(text)(text.replace("\x00", "")))
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if soup.title:
        soup.title.decompose()
    root = soup if keep_chrome else _strip_chrome(soup)
    summary = _prose_summary(root)
    # Mark headings with a sentinel line, flatten to text once, then turn sentinels into the outline. A heading is
    # made one line first: "<code>abc</code> — Abstract Base Classes" would flatten to two, and the outline
    # would keep only "abc" (a fifth of the Python library reference's headings).
    for h in root.find_all(["h1", "h2", "h3", "h4", "h5", "h6"]):
        if h.parent is None:  # a heading inside a heading (invalid, but found): now part of the outer one's line
            continue
        h.string = " ".join(h.get_text(" ", strip=True).split())
        h.insert_before(f"\n\x00{h.name[1]}\x00")
    parts, heads, pos, pending = [], [], 0, None
    for raw in root.get_text("\n").splitlines():
        line = raw.strip()
        if line.startswith("\x00") and line.count("\x00") >= 2:
            pending = int(line[1])
            line = line.split("\x00", 2)[2].strip()
            if not line:
                continue
        if not line:
            continue
        if pending is not None:
            heads.append((pos, pending, line))
            pending = None
        parts.append(line + "\n")
        pos += len(line) + 1
    text = "".join(parts)
    return ParsedDoc(text, "html", title, _outline(text, heads), summary=summary)


def _pdf(data: bytes, limits: dict[str, Any] | None = None) -> ParsedDoc:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    from apps.rag.pdf import PdfLimits, extract

    pdf_limits = PdfLimits.model_validate(limits or {})
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError("encrypted PDF (password required)")
        got = extract(data, reader, pdf_limits)
    except ParseError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as e:
        raise ParseError(f"corrupt or unreadable PDF: {str(e)[:120]}") from None
    except Exception as e:  # pypdf raises assorted errors on damaged files; none may abort the whole ingestion
        if "crypt" in str(e).lower() or "password" in str(e).lower():
            raise ParseError("encrypted PDF (password required)") from None
        raise ParseError(f"corrupt or unreadable PDF: {type(e).__name__}") from None
    text, heads, starts = "", [], []
    for n, page in enumerate(got.pages, 1):
        heads.append((len(text), 1, f"page {n}"))
        starts.append(len(text))
        text += page.strip() + "\n\n"
    if not text.strip() and got.skipped_ocr:
        why = "OCR is off" if not pdf_limits.ocr else "over the OCR page limit"
        raise ParseError(f"no text layer on {len(got.skipped_ocr)} page(s) and {why}")
    return ParsedDoc(text, "pdf", got.title, _outline(text, heads), pages=starts)
