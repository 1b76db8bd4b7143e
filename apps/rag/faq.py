"""A real evaluation set with no download: the Python FAQ that Debian's `python3-doc` installs.

Each FAQ question is a reST section title ending in '?'; its answer is the section body. We write one text file per
answer *without* its question heading (otherwise retrieval would just match the title) and a questions file whose
gold document is that answer file. Retrieval metrics are then measured at document level.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from apps.rag.parsers import _rst

FAQ_DIR = Path("/usr/share/doc/python3.11/html/_sources/faq")
_ROLE = re.compile(r":[a-z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")


def available(faq_dir: Path = FAQ_DIR) -> bool:
    return faq_dir.is_dir() and any(faq_dir.glob("*.rst.txt"))


def _clean(title: str) -> str:
    return _ROLE.sub(r"\1", title).replace("``", "").replace("`", "").strip()


def build_faq_set(out_dir: str | Path, faq_dir: Path = FAQ_DIR, limit: int | None = None) -> Path:
    """Write `out_dir/docs/*.txt` and `out_dir/questions.jsonl`; returns the questions file."""
    if not available(faq_dir):
        raise FileNotFoundError(f"the Python FAQ sources are not installed ({faq_dir}); apt-get install python3-doc")
    out = Path(out_dir)
    docs = out / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    questions = []
    for page in sorted(faq_dir.glob("*.rst.txt")):
        doc = _rst(page.read_bytes())
        for n, sec in enumerate(doc.sections):
            title = sec.heading.split(" > ")[-1]
            if not title.endswith("?"):
                continue
            body = doc.text[sec.start:sec.end].splitlines()
            # drop the title line and its adornment(s), keep the answer only
            while body and (not body[0].strip() or body[0].strip() == title or set(body[0].strip()) <= set("=-~^\"'`#*+:.")):
                body.pop(0)
            text = "\n".join(body).strip()
            if len(text) < 40:
                continue
            f = docs / f"{page.name.split('.')[0]}-{n:03d}.txt"
            f.write_text(text + "\n")
            questions.append({"question": _clean(title), "gold": [str(f.resolve())]})
            if limit and len(questions) >= limit:
                break
        if limit and len(questions) >= limit:
            break
    qfile = out / "questions.jsonl"
    qfile.write_text("".join(json.dumps(q) + "\n" for q in questions))
    return qfile
