"""Chunking strategies. Every chunk keeps character offsets into the parsed text, so citations map back to a span.

- fixed:      windows of `size` characters with `overlap`, ends moved back to whitespace so words stay whole.
- recursive:  split by paragraph, then sentence, then word until pieces fit, then pack neighbours up to `size`.
- structure:  recursive inside each section; the heading path is carried in metadata and prefixed to the text
              that is embedded (so "Installation > Windows" helps a query find an otherwise generic passage).

Whatever the strategy, the text embedded for a chunk (dense and BM25) begins with its document's lead sentence
(`lead_sentence`), so a passage deep in a page still says what the page is about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from apps.rag.parsers import SUMMARY_CHARS, ParsedDoc

STRATEGIES = ("fixed", "recursive", "structure")


@dataclass
class Chunk:
    text: str
    start: int
    end: int
    section: str
    embed_text: str


def chunk_document(doc: ParsedDoc, strategy: str, size: int = 800, overlap: int = 100) -> list[Chunk]:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown chunking {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if overlap >= size:
        raise ValueError(f"chunk overlap ({overlap}) must be smaller than the chunk size ({size})")
    if strategy == "fixed":
        spans = _fixed(doc.text, 0, len(doc.text), size, overlap)
    elif strategy == "recursive":
        spans = _recursive(doc.text, 0, len(doc.text), size)
    else:
        spans = []
        for sec in doc.sections:
            spans += [(s, e, sec.heading) for s, e in _recursive(doc.text, sec.start, sec.end, size)]
    lead = lead_sentence(doc)
    out = []
    for span in spans:
        s, e = span[0], span[1]
        section = span[2] if len(span) > 2 else doc.section_at(s)  # type: ignore[misc]
        s, e = _trim(doc.text, s, e)
        if e <= s:
            continue
        text = doc.text[s:e]
        prefix = ""
        if strategy == "structure":
            # the heading path usually starts with the document title already; don't say it twice
            prefix = section if doc.title and section.startswith(doc.title) else " > ".join(
                p for p in (doc.title, section) if p)
        # Not on a chunk the lead would outweigh (a heading alone, a one-line section): its vector would become
        # the lead's, and it would win the document's best-passage slot for any question the lead matches.
        context = lead if len(text) >= 2 * len(lead) and lead not in text else ""
        out.append(Chunk(text, s, e, section, "\n".join(p for p in (context, prefix, text) if p)))
    return out


def lead_sentence(doc: ParsedDoc) -> str:
    """What a document says it is about, in one line: the first line of at least 40 characters of its opening
    prose, cut at its first sentence end within 160 characters. Every chunk at least twice its length carries it, so
    "drop [-q] [<stash>] Remove a single stash entry" deep in a manual page is embedded with "git-stash - Stash the
    changes in a dirty working directory away". Measured on three sets (BENCHMARKS.md, "RAG (2026-12-07, late)"):
    MRR 0.653 -> 0.682 (git manual) and 0.922 -> 0.953 (Python library reference), FAQ recall@5 0.942 -> 0.948."""
    for line in (doc.summary or doc.text[:SUMMARY_CHARS]).split("\n"):
        line = line.strip()
        if len(line) >= 40:
            m = re.match(r"(.{40,160}?[.!?])(\s|$)", line)
            return (m.group(1) if m else line[:160]).strip()
    return ""


def _trim(text: str, s: int, e: int) -> tuple[int, int]:
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return s, e


def _fixed(text: str, lo: int, hi: int, size: int, overlap: int) -> list[tuple[int, int]]:
    spans, s = [], lo
    while s < hi:
        e = min(hi, s + size)
        if e < hi:
            ws = text.rfind(" ", s + size // 2, e)
            nl = text.rfind("\n", s + size // 2, e)
            cut = max(ws, nl)
            if cut > s:
                e = cut
        spans.append((s, e))
        if e >= hi:
            break
        s = max(e - overlap, s + 1)
        # start the next window on a word boundary too
        while s < e and not text[s - 1].isspace():
            s += 1
    return spans


_SEPARATORS = [re.compile(r"\n\s*\n"), re.compile(r"(?<=[.!?])\s+"), re.compile(r"\s+")]


def _split(text: str, lo: int, hi: int, size: int, level: int) -> list[tuple[int, int]]:
    """Pieces no longer than `size` (when possible) that tile [lo, hi)."""
    if hi - lo <= size:
        return [(lo, hi)]
    if level >= len(_SEPARATORS):
        return [(s, min(hi, s + size)) for s in range(lo, hi, size)]
    cuts = [m.end() for m in _SEPARATORS[level].finditer(text, lo, hi)]
    bounds = [lo] + [c for c in cuts if lo < c < hi] + [hi]
    pieces = []
    for a, b in zip(bounds, bounds[1:]):
        pieces += _split(text, a, b, size, level + 1) if b - a > size else [(a, b)]
    return pieces


def _recursive(text: str, lo: int, hi: int, size: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for a, b in _split(text, lo, hi, size, 0):
        if spans and b - spans[-1][0] <= size:
            spans[-1] = (spans[-1][0], b)  # pack small neighbours (pieces tile, so the span stays contiguous)
        else:
            spans.append((a, b))
    return spans
