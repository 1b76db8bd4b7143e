"""The built-in tools, declared through the same registry any user tool uses.

RAG and video search reach their apps' Python APIs lazily (`apps.rag.library.RagService`,
`apps.video...`): when an app or its data is unavailable the tool answers with a ToolError saying so, and the
agent carries on with its other tools.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from apps.agent.calculator import CalcError, calculate
from apps.agent.sandbox import SandboxLimits, run_python
from apps.agent.tools import Tool, ToolError, ToolRegistry

Searcher = Callable[[str, str, int], list[dict[str, Any]]]


class CalculatorArgs(BaseModel):
    # The pattern is also the grammar under constrained decoding: only characters arithmetic can use.
    # Starting with a digit, "(" or "-" keeps small models from opening with stray punctuation or words.
    expression: str = Field(..., pattern=r"^[0-9(-][0-9a-z+*/%^(). ,-]{0,119}$",
                            description="Arithmetic starting with a number or '(', e.g. (17 * 23) + 5, 2 * sqrt(2).")


class TimeArgs(BaseModel):
    timezone: str = Field("UTC", max_length=64, description="IANA zone name, e.g. Europe/Paris.")


class ReadFileArgs(BaseModel):
    path: str = Field(..., max_length=500, description="File path inside one of the allowed folders.")
    max_chars: int = Field(4000, ge=1, le=20000, description="Characters to return from the start.")


class ListFilesArgs(BaseModel):
    folder: str = Field("", max_length=500, description="Folder inside an allowed folder; empty lists the roots.")


class SearchArgs(BaseModel):
    # Short bound: under constrained decoding it also stops a degenerate model from filling max_tokens.
    query: str = Field(..., min_length=1, max_length=150, description="What to look for.")
    k: int = Field(3, ge=1, le=10, description="How many results.")


class PythonArgs(BaseModel):
    code: str = Field(..., min_length=1, max_length=20000, description="A Python script; print what you need.")


def _calculator(a: CalculatorArgs) -> str:
    try:
        return str(calculate(a.expression))
    except CalcError as e:
        raise ToolError(f"calculator: {e}") from None


def _now(a: TimeArgs) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        tz = ZoneInfo(a.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown timezone {a.timezone!r}; use an IANA name such as UTC or Europe/Paris") from None
    now = dt.datetime.now(tz)
    return f"{now.isoformat(timespec='seconds')} ({now.strftime('%A')}, {a.timezone})"


class FileReader:
    """Read-only access confined to `roots`: paths are resolved (symlinks too) before the containment check."""

    def __init__(self, roots: list[str]):
        self.roots = [Path(os.path.expanduser(r)).resolve() for r in roots]

    def _resolve(self, path: str) -> Path:
        if not self.roots:
            raise ToolError("no folders are configured for reading (agent.file_roots is empty)")
        raw = Path(os.path.expanduser(path))
        candidates = [raw] if raw.is_absolute() else [r / raw for r in self.roots]
        for cand in candidates:
            real = cand.resolve()
            if any(real == r or r in real.parents for r in self.roots) and real.exists():
                return real
        if raw.is_absolute() and not any(raw.resolve() == r or r in raw.resolve().parents for r in self.roots):
            raise ToolError(f"{path} is outside the allowed folders: {', '.join(map(str, self.roots))}")
        raise ToolError(f"{path} does not exist in the allowed folders")

    def read(self, a: ReadFileArgs) -> str:
        p = self._resolve(a.path)
        if p.is_dir():
            raise ToolError(f"{a.path} is a folder; use list_files")
        with open(p, "rb") as f:
            data = f.read(a.max_chars * 4 + 4)
        if b"\x00" in data[:4096]:
            raise ToolError(f"{a.path} is a binary file")
        text = data.decode("utf-8", errors="replace")[: a.max_chars]
        more = p.stat().st_size > len(text.encode("utf-8"))
        return text + ("\n[... file continues]" if more else "")

    def list(self, a: ListFilesArgs) -> str:
        if not a.folder:
            return "\n".join(str(r) for r in self.roots) or "(no folders configured)"
        p = self._resolve(a.folder)
        if not p.is_dir():
            raise ToolError(f"{a.folder} is not a folder")
        names = sorted(e.name + ("/" if e.is_dir() else "") for e in p.iterdir())
        return "\n".join(names[:200]) + (f"\n[... {len(names) - 200} more]" if len(names) > 200 else "")


AppsClient = Callable[[], Any]  # -> a ConductorClient (a context manager) for the stack's app routes


def _http_post(apps_client: AppsClient, path: str, body: dict[str, Any]) -> Any:
    from apps.client import ConductorAPIError

    try:
        with apps_client() as client:
            return client.post_json(path, body)
    except ConductorAPIError as e:
        raise ToolError(f"search failed: {e.message}", retryable=e.status >= 500) from None
    except Exception as e:  # noqa: BLE001 - httpx transport errors: the app is down or unreachable
        raise ToolError(f"search service unreachable: {type(e).__name__}", retryable=True) from None


def rag_searcher(config: Any, collection: str, apps_client: AppsClient | None = None) -> Searcher:
    """Search a RAG collection through apps.rag: over HTTP with `apps_client` (inside the stack, where the RAG
    app owns its single-process store), through its Python API otherwise."""
    state: dict[str, Any] = {}

    def search(query: str, coll: str, k: int) -> list[dict[str, Any]]:
        coll = coll or collection
        if apps_client is not None:
            hits = _http_post(apps_client, f"/v1/rag/{coll}/search", {"question": query, "k": k})["hits"]
        else:
            try:
                from apps.rag.retrieval import SearchParams
                from apps.rag.library import RagService
            except ImportError as e:
                raise ToolError(f"RAG search is unavailable: {e}") from None
            try:
                state.setdefault("svc", RagService(config))
                hits = [h.model_dump() for h in state["svc"].search(coll, query, SearchParams(k=k))]
            except (ValueError, RuntimeError) as e:  # RagError (missing collection, ...), store locked
                raise ToolError(f"RAG search failed: {e}") from None
        return [{"source": h.get("source"), "section": h.get("section"), "text": h.get("text", "")} for h in hits]

    return search


def video_searcher(config: Any, apps_client: AppsClient | None = None) -> Searcher:
    """Search indexed videos through apps.video (HTTP with `apps_client`, its VideoIndex otherwise)."""

    def search(query: str, _coll: str, k: int) -> list[dict[str, Any]]:
        if apps_client is not None:
            hits = _http_post(apps_client, "/v1/video/search", {"query": query, "k": k})["data"]
        else:
            try:
                from apps.video.index import VideoIndex
            except ImportError as e:
                raise ToolError(f"video search is unavailable: {e}") from None
            try:
                index = VideoIndex(config.video)
            except Exception as e:  # noqa: BLE001 - e.g. the store is held by the running video app
                raise ToolError(f"video search is unavailable: {type(e).__name__}: {e}") from None
            try:
                hits = index.search(query, None, k)
            except ValueError as e:
                raise ToolError(f"video search failed: {e}") from None
            finally:
                index.close()
        return [{"source": h.get("name") or h.get("video"), "section": f"{h.get('start', 0):.1f}-{h.get('end', 0):.1f}s",
                 "text": h.get("transcript") or h.get("ocr") or h.get("caption") or ""} for h in hits]

    return search


def _search_tool(name: str, description: str, searcher: Searcher, collection: str) -> Tool:
    def run(a: SearchArgs) -> str:
        hits = searcher(a.query, collection, a.k)
        if not hits:
            return "no results"
        parts = []
        for i, h in enumerate(hits, 1):
            where = " / ".join(str(h[k]) for k in ("source", "section") if h.get(k) not in (None, ""))
            parts.append(f"[{i}] {where}\n{h.get('text', '')}")
        return "\n\n".join(parts)

    return Tool(name, description, SearchArgs, run, timeout_s=60.0, retries=1, idempotent=True)


def builtin_registry(config: Any = None, file_roots: list[str] | None = None,
                     sandbox: SandboxLimits | None = None, rag: Searcher | None = None,
                     video: Searcher | None = None, max_output_chars: int = 4000,
                     apps_client: AppsClient | None = None) -> ToolRegistry:
    """All built-in tools. `config` is the ConductorConfig (for the RAG/video apps); searchers can be injected;
    `apps_client` sends the searches to the stack's app routes instead of opening the stores in-process."""
    agent_cfg = getattr(config, "agent", None)
    roots = file_roots if file_roots is not None else list(getattr(agent_cfg, "file_roots", []) or [])
    limits = sandbox or getattr(agent_cfg, "sandbox", None) or SandboxLimits()
    collection = getattr(agent_cfg, "rag_collection", "default")
    reader = FileReader(roots)

    def python(a: PythonArgs) -> str:
        try:
            return run_python(a.code, limits).render()
        except RuntimeError as e:
            raise ToolError(f"sandbox unavailable: {e}") from None

    reg = ToolRegistry(max_output_chars=max_output_chars)
    reg.register(Tool("calculator", "Evaluate an arithmetic expression exactly.",
                      CalculatorArgs, _calculator, timeout_s=5.0, idempotent=True))
    reg.register(Tool("current_time", "Current date and time in a timezone.", TimeArgs, _now,
                      timeout_s=5.0, idempotent=True))
    reg.register(Tool("read_file", "Read a text file from the allowed folders (read-only).",
                      ReadFileArgs, reader.read, timeout_s=10.0, idempotent=True))
    reg.register(Tool("list_files", "List a folder inside the allowed folders.", ListFilesArgs,
                      reader.list, timeout_s=10.0, idempotent=True))
    reg.register(_search_tool("search_documents", "Search the document collection; returns passages.",
                              rag or rag_searcher(config, collection, apps_client), collection))
    reg.register(_search_tool("search_videos", "Search indexed videos (transcripts, on-screen text).",
                              video or video_searcher(config, apps_client), ""))
    reg.register(Tool("python", "Run a Python script in a sandbox (no network, limited CPU/memory/time); "
                      "returns stdout/stderr.", PythonArgs, python, dangerous=True,
                      timeout_s=limits.wall_s + 10))
    servers = list(getattr(agent_cfg, "mcp_servers", None) or [])
    if servers:
        from apps.agent.mcp_client import MCPToolProvider

        reg.add_provider(MCPToolProvider(servers, reg))
    return reg
