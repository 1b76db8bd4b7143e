"""PDFs as they come: a text layer where there is one, OCR where there is none, tables kept as Markdown tables.

- Limits first, from the file's own structure and before any page is drawn: the page count and each page's size
  (PDF's own largest page is 14,400 units a side; a bigger one only exists to make a renderer allocate a huge
  bitmap). A file over a limit is refused as a whole (`DocumentTooLarge`, 413 on upload).
- Text: pypdf per page. A page with (almost) no extractable text is rendered with pypdfium2 at `ocr_dpi`, capped at
  `ocr_max_pixels`, and read by the packaged RapidOCR; at most `ocr_max_pages` pages per file are OCR'd.
- Tables: pdfplumber finds ruled tables; their cells become a Markdown table in reading order with the page's
  other lines, so a row stays one line in its chunk.
Every page's start offset is kept, so a chunk knows its page and a citation can say `file.pdf#page=12`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

from apps.rag.errors import DocumentTooLarge
from cluster.config import PdfConfig as PdfLimits  # rag.pdf in the YAML


@dataclass
class PdfText:
    pages: list[str]  # one text per page, 1-based page = index + 1
    ocr_pages: list[int]  # pages read by OCR
    skipped_ocr: list[int]  # scanned pages beyond ocr_max_pages (or with OCR off)
    title: str = ""


def check_limits(reader: Any, limits: PdfLimits) -> None:
    n = len(reader.pages)
    if n > limits.max_pages:
        raise DocumentTooLarge(f"PDF has {n} pages; the limit is {limits.max_pages}")
    for i, page in enumerate(reader.pages, 1):
        box = page.mediabox
        w, h = abs(float(box.width)), abs(float(box.height))
        if max(w, h) > limits.max_page_points:
            raise DocumentTooLarge(f"page {i} is {w:.0f} x {h:.0f} points; the largest page allowed is "
                                   f"{limits.max_page_points:.0f} points a side")


def extract(data: bytes, reader: Any, limits: PdfLimits) -> PdfText:
    check_limits(reader, limits)
    pages = [_clean(p.extract_text() or "") for p in reader.pages]
    if len(pages) <= limits.max_table_pages:
        for i, text in _table_pages(data).items():
            pages[i] = text
    scanned = [i for i, t in enumerate(pages) if len(t.strip()) < limits.min_text_chars]
    todo = scanned[: limits.ocr_max_pages] if limits.ocr else []
    if todo:
        for i, text in _ocr_pages(data, todo, limits).items():
            pages[i] = text
    title = ""
    try:
        title = str((reader.metadata or {}).get("/Title") or "")
    except Exception:  # metadata of a damaged file: not worth failing for
        pass
    return PdfText(pages, [i + 1 for i in todo], [i + 1 for i in scanned if i not in todo], title)


def _clean(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _ocr_pages(data: bytes, todo: list[int], limits: PdfLimits) -> dict[int, str]:
    import numpy as np
    import pypdfium2 as pdfium

    from deployments.ocr import read_page

    out = {}
    pdf = pdfium.PdfDocument(data)
    try:
        for i in todo:
            page = pdf[i]
            w, h = page.get_size()
            scale = limits.ocr_dpi / 72
            if w * h * scale * scale > limits.ocr_max_pixels:  # draw it smaller rather than allocate more
                scale = math.sqrt(limits.ocr_max_pixels / (w * h))
            image = page.render(scale=scale).to_numpy()
            if image.ndim == 2:  # a grey bitmap
                image = np.repeat(image[:, :, None], 3, axis=2)
            image = image[:, :, :3]
            out[i] = "\n".join(read_page(image[:, :, ::-1]))  # pdfium draws BGR
            page.close()
    finally:
        pdf.close()
    return out


def _table_pages(data: bytes) -> dict[int, str]:
    """Pages holding ruled tables -> their text with each table as Markdown, in reading order."""
    import pdfplumber

    out = {}
    try:
        with pdfplumber.open(io.BytesIO(data)) as pdf:
            for i, page in enumerate(pdf.pages):
                if not page.lines and not page.rects:  # no ruling: nothing the line strategy could find
                    continue
                tables = page.find_tables()
                if not tables:
                    continue
                boxes = [t.bbox for t in tables]
                outside = page.filter(lambda o: not any(_inside(o, b) for b in boxes))
                items = [(line["top"], line["text"]) for line in outside.extract_text_lines()]
                items += [(t.bbox[1], markdown_table(t.extract())) for t in tables]
                out[i] = "\n".join(text for _, text in sorted(items, key=lambda t: t[0]) if text.strip())
    except Exception:  # table detection is a refinement: a file it cannot read keeps pypdf's text
        return {}
    return out


def _inside(obj: dict[str, Any], box: tuple[float, float, float, float]) -> bool:
    x = (obj.get("x0", 0) + obj.get("x1", 0)) / 2
    y = (obj.get("top", 0) + obj.get("bottom", 0)) / 2
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def markdown_table(rows: list[list[str | None]]) -> str:
    rows = [[" ".join((c or "").split()).replace("|", "\\|") for c in r] for r in rows if any(c for c in r)]
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * width]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    # blank lines around it: the chunker splits at paragraphs first, so a table that fits stays in one chunk
    return "\n" + "\n".join(lines) + "\n"
