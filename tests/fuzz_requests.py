"""Property-based request fuzzing of every route of every app (hypothesis strategies, a real HTTP client).

Used by tests/serving/test_fuzz.py (a few hundred requests in the suite) and benchmarks/bench_fuzz.py (10,000+).
Each request is one of: a mutated valid body (a field replaced, removed or added), arbitrary JSON, raw garbage,
deep nesting, huge numbers, NaN; sent with a right or wrong content type, whole or chunked, to a route taken from
the served apps' own route tables. A caller's mistake must never be a 5xx or outlast its deadline.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
TEMPLATES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": {"model": "smollm2", "prompt": "Once", "max_tokens": 4},
    "/v1/embeddings": {"input": ["hello", "world"]},
    "/v1/rerank": {"query": "router reset", "documents": ["Hold the reset pin.", "Paris is in France."]},
    "/v1/rag/{collection}/search": {"question": "router reset", "k": 3},
    "/v1/rag/{collection}/ingest": {"paths": ["/etc"]},
    "/v1/rag/{collection}/eval": {"k": 3},
    "/v1/video/search": {"query": "launch window", "k": 3},
    "/v1/detect/": {"path": "/nonexistent/model.safetensors"},
}
# Valid bodies for these would run a model for many seconds (an answer, an agent run): fuzz them with
# arbitrary JSON only, which is almost never valid.
EXPENSIVE = {"/v1/rag/{collection}/query", "/v1/agent/runs"}
LIGHT_MODELS = ["smollm2", "echo"]


@dataclass
class Route:
    method: str
    template: str  # the path template, e.g. /v1/rag/{collection}/search
    upload: bool = False
    params: list[str] = field(default_factory=list)


def served_routes(client: Any, prefixes: list[str]) -> list[Route]:
    """Every route of every served app, from its own OpenAPI table (so a new route is fuzzed automatically)."""
    routes = []
    for prefix in prefixes:
        doc = client.get(prefix.rstrip("/") + "/openapi.json").json()
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                params = [p["name"] for p in op.get("parameters", []) if p.get("in") == "query"]
                upload = "upload" in path or path.endswith("/ingest") and "video" in prefix
                routes.append(Route(method.upper(), prefix.rstrip("/") + path, upload, params))
    return routes


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 80), max_value=2 ** 80),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=16)
path_value = st.one_of(st.sampled_from(["fuzz", "x", "..", "%2e%2e", "a" * 300, "ui", "healthz", "0123456789abcdef"]),
                       st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20))


@st.composite
def mutated(draw: Any, template: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(json.dumps(template))
    key = draw(st.sampled_from(sorted(body) + ["__new__"]))
    action = draw(st.sampled_from(["replace", "delete", "add", "nest"]))
    if key == "__new__" or action == "add":
        body[draw(st.sampled_from(["n_predict", "tools", "tool_choice", "response_format", "stop", "n", "seed",
                                   "logit_bias", "stream", "user", "grammar", "x" * 5]))] = draw(json_value)
    elif action == "delete":
        body.pop(key, None)
    elif action == "nest" and key == "messages":
        body["messages"] = [draw(st.dictionaries(st.sampled_from(["role", "content", "tool_calls", "name",
                                                                  "tool_call_id"]), json_value, max_size=4))]
    else:
        body[key] = draw(json_value)
    if body.get("model") not in LIGHT_MODELS and "model" in template and draw(st.booleans()):
        body["model"] = draw(st.sampled_from(LIGHT_MODELS))
    if isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 8:
        body["max_tokens"] = 8  # keep generations short: the point is the validation, not the model
    return body


def _deep(n: int) -> bytes:
    return b'{"a":' * n + b"1" + b"}" * n


special_bodies = st.one_of(
    st.integers(10, 200_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(10, 50_000).map(_deep),
    st.integers(50, 20_000).map(lambda n: b'{"max_tokens": 1' + b"0" * n + b"}"),
    st.sampled_from([b'{"temperature": NaN}', b'{"temperature": Infinity}', b'{"seed": -Infinity}', b"\xff\xfe{",
                     b'{"messages": [{"role": "user", "content": "\\ud800"}]}', b"null", b"[]", b'"x"', b"",
                     b'{"model": null, "messages": [null]}', b'{"input": [[1, 2], [3]]}']),
)


@dataclass
class FuzzRequest:
    method: str
    path: str
    body: bytes
    content_type: str | None
    chunked: bool
    query: dict[str, str]


@st.composite
def requests_for(draw: Any, routes: list[Route]) -> FuzzRequest:
    route = draw(st.sampled_from(routes))
    path = re.sub(r"\{[^}]+\}", lambda _: quote(draw(path_value), safe="") or "x", route.template)
    kind = draw(st.sampled_from(["mutated", "json", "garbage", "special"]))
    template = TEMPLATES.get(route.template)
    if kind == "mutated" and template is not None and route.template not in EXPENSIVE:
        body = json.dumps(draw(mutated(template))).encode()
    elif kind == "garbage":
        body = draw(st.binary(max_size=4096))
    elif kind == "special":
        body = draw(special_bodies)
    else:
        body = json.dumps(draw(json_value)).encode()
    ctype = draw(st.sampled_from(["application/json", "application/json", "text/plain", "application/octet-stream",
                                  "multipart/form-data; boundary=zz", "application/x-www-form-urlencoded", None]))
    query = {p: draw(st.one_of(st.text(max_size=20), st.integers(-10**12, 10**12).map(str)))
             for p in route.params if draw(st.booleans())}
    if route.upload:
        query.setdefault("filename", draw(st.sampled_from(["a.md", "b.txt", "c.pdf", "m.gguf", "m.safetensors",
                                                           "v.mp4", "x.exe", "../../etc/passwd", ""])))
        query.setdefault("name", query["filename"])
    return FuzzRequest(route.method, path, body, ctype, draw(st.booleans()), query)


def send(client: Any, req: FuzzRequest, timeout_s: float) -> int:
    """Send one fuzzed request; returns the status (599 when it outlived `timeout_s`)."""
    import httpx

    headers = {"content-type": req.content_type} if req.content_type else {}
    content: Any = req.body
    if req.chunked:
        data = req.body
        content = (data[i:i + 997] for i in range(0, max(len(data), 1), 997))
    try:
        r = client.request(req.method, req.path, params=req.query, content=content, headers=headers,
                           timeout=timeout_s)
    except httpx.TimeoutException:
        return 599
    return r.status_code
