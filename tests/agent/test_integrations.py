"""The agent's search tools against the real RAG app (embedded store, packaged MiniLM) in-process."""

from __future__ import annotations

import pytest

from apps.agent.builtin import builtin_registry
from cluster.config import ConductorConfig


def test_search_documents_uses_the_rag_app(tmp_path, monkeypatch):
    rag = pytest.importorskip("apps.rag.library")
    monkeypatch.delenv("CONDUCTOR_BASE_URL", raising=False)  # in-process path, not the served app
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "orion.txt").write_text("Project Orion launched in 2023. Its lead engineer is Dana Whitfield.")
    (docs / "atlas.txt").write_text("The Atlas data center is located in Reykjavik and runs on geothermal power.")
    config = ConductorConfig.model_validate({"rag": {"data_dir": str(tmp_path / "rag")},
                                             "video": {"data_dir": str(tmp_path / "video")},
                                             "agent": {"rag_collection": "kb"}})
    svc = rag.RagService(config)
    try:
        svc.ingest([str(docs)], "kb")
    finally:
        svc.close()
    reg = builtin_registry(config)
    res = reg.call("search_documents", {"query": "Where is the Atlas data center?", "k": 1})
    assert res.ok, res.error
    assert "atlas.txt" in res.output and "Reykjavik" in res.output
    missing = builtin_registry(config.model_copy(update={"agent": config.agent.model_copy(
        update={"rag_collection": "nope"})})).call("search_documents", {"query": "x"})
    assert missing.error and "RAG search failed" in missing.error
    # No video indexed: a clear tool error or an empty result, never an exception out of the registry.
    vid = reg.call("search_videos", {"query": "launch"})
    assert vid.ok or "video search" in vid.error
