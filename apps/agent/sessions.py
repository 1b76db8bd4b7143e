"""Sessions: a conversation kept across runs, as the Agents SDK's sessions are. A run given a `session_id` starts
with that session's earlier turns (task and answer pairs, the newest that fit `agent.session_max_tokens`), and its
own turn is added when it ends with an answer. A session belongs to the user who started it: anyone else is told
it does not exist."""

from __future__ import annotations

import re
import time
from typing import Any

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_id(session_id: str) -> str:
    if not SESSION_ID.match(session_id or ""):
        raise ValueError(f"invalid session id {session_id!r}: use 1-64 letters, digits, '-' or '_'")
    return session_id


def load(store: Any, session_id: str, owner: str) -> list[dict[str, Any]]:
    """The session's turns ([] for a new session); KeyError when it is another user's."""
    doc = store.get_session(check_id(session_id))
    if doc is None:
        return []
    if doc["owner"] != owner:
        raise KeyError(f"no session {session_id!r}")
    return list(doc["turns"])


def history_messages(turns: list[dict[str, Any]], max_tokens: int) -> list[dict[str, str]]:
    """The newest turns that fit the budget (about 4 characters a token), oldest first, as chat messages."""
    kept, used = [], 0
    for t in reversed(turns):
        cost = (len(t["task"]) + len(t["answer"])) // 4 + 8
        if used + cost > max_tokens:
            break
        kept.append(t)
        used += cost
    out: list[dict[str, str]] = []
    for t in reversed(kept):
        out += [{"role": "user", "content": t["task"]}, {"role": "assistant", "content": t["answer"]}]
    return out


def record(store: Any, session_id: str, owner: str, trace: Any) -> None:
    """Add the finished run's turn to its session."""
    turns = load(store, session_id, owner)
    turns.append({"run_id": trace.run_id, "task": trace.task, "answer": trace.answer or "", "at": time.time()})
    store.put_session(session_id, owner, turns)
