"""Is an answer supported by the passages it cites? Checked per sentence, at answer time and in evaluation.

No entailment model ships in a package here, so the default check is embedding + lexical support, and it says so
(`method`). A sentence is supported when both hold against one of its passages:
- lexical: most of its content words that the question did not already contain (the *new* claims: "pressing",
  "button") occur in the passage, after light stemming;
- semantic: its MiniLM cosine to the passage's closest sentence reaches `min_cosine` (not asked of a short answer
  of three content words or fewer -- "1200" -- whose embedding says little).
When a capable chat model is configured (`rag.judge_model`), it judges each sentence instead ("entailment").

An answer with no supported sentence is replaced by an extractive one: the passage sentences closest to the
question, quoted with their source, and the answer says `grounded: false` and why.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|\n+")
_WORD = re.compile(r"[A-Za-z0-9_]+(?:[-'][A-Za-z0-9_]+)*")
_CITE = re.compile(r"\s*\[\d{1,3}\]")
STOP = frozenset("""a an the and or but if then so of to in on at by for with from as is are was were be been being it
its this that these those there here you your yours we our us i me my he she they them their his her
can could may might will would shall should do does did done have has had not no yes any all some
each every more most such than too very just also only about into over under again further once what
which who whom whose when where why how both either neither own same other another per via using use
used get got make made one""".split())


class SentenceCheck(BaseModel):
    text: str
    supported: bool
    score: float = Field(description="Support in [0, 1]: the lower of the lexical share and the cosine.")
    passage: int | None = Field(None, description="The passage number that supports it best.")


class Grounding(BaseModel):
    grounded: bool = Field(description="At least one sentence is supported and none is contradicted outright.")
    method: str = Field(description="'embedding+lexical' or 'llm-judge:<model>'.")
    supported_share: float = Field(description="Share of the answer's sentences that are supported.")
    sentences: list[SentenceCheck] = Field(default_factory=list)
    reason: str | None = Field(None, description="Why the answer was not grounded.")


def sentences(text: str, min_words: int = 1) -> list[str]:
    """Sentences (and lines), citation markers removed; a Markdown table stays one unit, so a row keeps its header."""
    out: list[str] = []
    table: list[str] = []
    for line in _CITE.sub("", text).splitlines() + [""]:
        if line.lstrip().startswith("|"):
            table.append(line.strip())
            continue
        if table:
            out.append("\n".join(table))
            table = []
        out += [s.strip() for s in _SENT.split(line) if len(_WORD.findall(s)) >= min_words]
    return out


# "10 seconds" is what the passage's "ten seconds" says: number words compare as their digits
_NUMBERS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve "
                                            "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty"
                                            .split())}
_NUMBERS.update({w: str(10 * i) for i, w in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), 3)})


def _stem(w: str) -> str:
    w = w.lower()
    if w in _NUMBERS:
        return _NUMBERS[w]
    for suf in ("ing", "edly", "ed", "es", "s", "ly"):
        if len(w) > len(suf) + 2 and w.endswith(suf):
            return w[: -len(suf)]
    return w


def content_words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text) if w.lower() not in STOP and (len(w) > 1 or w.isdigit())}


def lexical_support(sentence: str, passage: str, question: str = "") -> float:
    """Share of the sentence's new content words (not in the question) found in the passage."""
    new = content_words(sentence) - content_words(question)
    if not new:  # it only restates the question: nothing claimed, nothing to support
        new = content_words(sentence)
    if not new:
        return 0.0
    return len(new & content_words(passage)) / len(new)


def check(answer: str, question: str, passages: list[str], embedder: Any, min_lexical: float = 0.6,
          min_cosine: float = 0.5) -> Grounding:
    """Embedding + lexical support of each answer sentence by the given passages (numbered from 1)."""
    sents = sentences(answer)
    if not sents or not passages:
        return Grounding(grounded=False, method="embedding+lexical", supported_share=0.0,
                         reason="the answer has no sentence to check" if not sents else "no passage to check against")
    psents = [(i, s) for i, p in enumerate(passages, 1) for s in (sentences(p, 2) or [p])]
    vecs = embedder.embed(sents + [s for _, s in psents])
    import numpy as np

    a, b = np.asarray(vecs[: len(sents)]), np.asarray(vecs[len(sents):])
    cos = a @ b.T  # (answer sentences, passage sentences); the embedder normalises
    checks = []
    for si, sent in enumerate(sents):
        best = (0.0, None)
        for pi, passage in enumerate(passages, 1):
            lex = lexical_support(sent, passage, question)
            c = max((float(cos[si, j]) for j, (n, _) in enumerate(psents) if n == pi), default=0.0)
            # a short answer ("1200", "the blue button") has no meaning of its own to embed: its words decide
            short = len(content_words(sent)) <= 3
            score = min(lex, c / min_cosine * min_lexical) if c < min_cosine and not short else lex
            if score > best[0]:
                best = (score, pi)
        checks.append(SentenceCheck(text=sent, supported=best[0] >= min_lexical, score=round(best[0], 3),
                                    passage=best[1]))
    share = sum(c.supported for c in checks) / len(checks)
    grounded = share >= 0.5
    reason = None if grounded else (f"{sum(not c.supported for c in checks)} of {len(checks)} sentences are not "
                                    "supported by the cited passages")
    return Grounding(grounded=grounded, method="embedding+lexical", supported_share=round(share, 3),
                     sentences=checks, reason=reason)


def judge(client: Any, model: str, answer: str, passages: list[str]) -> Grounding:
    """A capable chat model decides, sentence by sentence, whether the passages entail it."""
    sents = sentences(answer)
    context = "\n\n".join(f"[{i}] {p}" for i, p in enumerate(passages, 1))
    checks = []
    for sent in sents:
        reply = client.chat_text([{"role": "user", "content": f"Passages:\n{context}\n\nClaim: {sent}\n\nIs the claim "
                                   "fully supported by the passages? Reply with exactly one word: yes or no."}],
                                 model=model, temperature=0.0, max_tokens=3)
        ok = reply.strip().lower().startswith("yes")
        checks.append(SentenceCheck(text=sent, supported=ok, score=1.0 if ok else 0.0))
    share = sum(c.supported for c in checks) / len(checks) if checks else 0.0
    return Grounding(grounded=share >= 0.5, method=f"llm-judge:{model}", supported_share=round(share, 3),
                     sentences=checks, reason=None if share >= 0.5 else "the judge found the answer unsupported")


def extractive_answer(question: str, hits: list[Any], embedder: Any, max_sentences: int = 2) -> tuple[str, list[int]]:
    """The passage sentences closest to the question, quoted with their passage number -> (text, [n])."""
    import numpy as np

    cands = [(i, s) for i, h in enumerate(hits, 1) for s in (sentences(h.text, 2) or [h.text.strip()])]
    if not cands:
        return "", []
    vecs = np.asarray(embedder.embed([question] + [s for _, s in cands]))
    sims = vecs[1:] @ vecs[0]
    order = np.argsort(-sims).tolist()
    # the best sentence, and the next ones only if nearly as close (a second, weaker quote dilutes the answer)
    keep = [order[0]] + [j for j in order[1:max_sentences] if sims[j] >= 0.8 * sims[order[0]]]
    top = sorted(keep, key=lambda j: (cands[j][0], j))
    quoted = " ".join(f"\n\n{cands[j][1]}\n\n[{cands[j][0]}]" if cands[j][1].startswith("|")
                      else f"\"{cands[j][1]}\" [{cands[j][0]}]" for j in top)
    return f"The documents say: {quoted}".strip(), sorted({cands[j][0] for j in top})
