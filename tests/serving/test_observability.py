"""One request id through every hop, and a Grafana dashboard whose every metric the gateway exports."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "cluster" / "grafana" / "conductor-dashboard.json"


def test_every_dashboard_panel_reads_a_metric_the_gateway_exports(serve_stack):
    dash = json.loads(DASHBOARD.read_text())
    with serve_stack.http() as h:
        exported = set(re.findall(r"^# HELP (\S+) ", h.get("/metrics").text, re.M))
    assert dash["panels"] and all(p["targets"] for p in dash["panels"])
    for panel in dash["panels"]:
        for target in panel["targets"]:
            names = set(re.findall(r"\b(conductor_[a-z0-9_]+)", target["expr"]))
            assert names, panel["title"]
            for name in names:
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in exported or base in exported, (panel["title"], name)


def _serve_logs(stack) -> list[Path]:
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "serve"
    return sorted(logs.glob("replica_*.log"))


def _logged(stack, request_id: str, deployment: str) -> list[dict]:
    found = []
    for path in _serve_logs(stack):
        if deployment not in path.name:
            continue
        for line in path.read_text(errors="replace").splitlines():
            if request_id in line:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("request_id") == request_id:
                    found.append(entry)
    return found


def test_one_request_id_travels_from_an_app_through_the_gateway_to_the_engine(serve_stack):
    rid = f"trace-{int(time.time() * 1000)}"
    with serve_stack.http() as h:
        up = h.post("/v1/rag/rid-docs/upload", content=b"Request ids travel with every hop.",
                    params={"filename": "ids.md"}, headers={"x-request-id": rid + "-app",
                                                            "content-type": "text/markdown"})
        assert up.status_code == 200, up.text
        ask = h.post("/v1/rag/rid-docs/query", headers={"x-request-id": rid + "-app"},
                     json={"question": "what travels with every hop?", "model": "echo"})
        assert ask.status_code == 200 and ask.headers["x-request-id"] == rid + "-app"
        r = h.post("/v1/chat/completions", headers={"x-request-id": rid},
                   json={"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
        assert r.status_code == 200 and r.headers["x-request-id"] == rid
        bad = h.get("/v1/models", headers={"x-request-id": "no spaces allowed"})
        assert bad.status_code == 400 and "x-request-id" in bad.json()["error"]["message"]
    deadline = time.monotonic() + 30  # replica logs are flushed by their own handlers
    gateway, engine = [], []
    while time.monotonic() < deadline and not (gateway and engine):
        gateway, engine = _logged(serve_stack, rid, "Gateway"), _logged(serve_stack, rid, "echo-local")
        time.sleep(0.5)
    assert any("/v1/chat/completions" in e["message"] for e in gateway)  # JSON lines carrying the id
    assert engine, "the engine replica's log lines carry the gateway request's id"
    # The RAG app asked the gateway for the answer: that call carried the question's id.
    deadline = time.monotonic() + 30
    while not (relayed := _logged(serve_stack, rid + "-app", "Gateway")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert any("/v1/chat/completions" in json.dumps(e) for e in relayed), relayed
