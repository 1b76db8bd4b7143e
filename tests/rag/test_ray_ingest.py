"""Bulk ingestion through Ray Data produces exactly what the single-process loop produces."""

from __future__ import annotations

from apps.rag.retrieval import SearchParams


def _state(svc, collection, level="chunk"):
    return sorted((p["source"], p["chunk_index"], p["text"]) for p in
                  svc.store.iter_payloads(collection, ["source", "chunk_index", "text", "level"])
                  if p.get("level", "chunk") == level)


def test_ray_data_ingestion_matches_local_and_is_incremental(ray_cluster, service, docs):
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    seen = []
    r = service.ingest([str(docs)], "viaray", engine="ray", progress=lambda d, t, m: seen.append((d, t)))
    assert r.engine == "ray" and len(r.added) == 5 and "broken" in next(iter(r.skipped))
    assert seen and seen[-1] == (6, 6)  # progress reached every document, the skipped one included
    service.ingest([str(docs)], "vialocal", engine="local")
    assert _state(service, "viaray") == _state(service, "vialocal")
    assert _state(service, "viaray", "doc") == _state(service, "vialocal", "doc") and len(_state(service, "viaray",
                                                                                                 "doc")) == 5
    # same vectors: the same question ranks the same passages in both
    q = "how do I descale the kettle"
    a = [(h.source, h.chunk_index) for h in service.search("viaray", q, SearchParams(k=3))]
    b = [(h.source, h.chunk_index) for h in service.search("vialocal", q, SearchParams(k=3))]
    assert a == b

    (docs / "penguins.txt").write_text("Penguins changed: now about krill diets.\n")
    r2 = service.ingest([str(docs)], "viaray", engine="ray")
    assert r2.updated == [str(docs / "penguins.txt")] and len(r2.unchanged) == 4
    texts = [t for s, _, t in _state(service, "viaray") if s.endswith("penguins.txt")]
    assert texts == ["Penguins changed: now about krill diets."]
