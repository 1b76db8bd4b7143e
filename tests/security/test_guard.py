"""Every route guarded by the route table, users isolated, guessing limited, cross-site requests refused —
against the real Serve stack (keys on, two users)."""

from __future__ import annotations

import itertools
import re

import pytest

pytestmark = pytest.mark.serve

_addresses = (f"127.0.{a}.{b}" for a, b in itertools.product(range(1, 250), range(1, 250)))


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def _route_table(routes, prefix: str = ""):
    """(method, path template) for every route, through mounts and included routers (Gradio's API)."""
    from starlette.routing import Mount

    for r in routes:
        if isinstance(r, Mount):
            yield from _route_table(r.app.routes if hasattr(r.app, "routes") else [], prefix + r.path)
        elif hasattr(r, "original_router"):  # FastAPI's included router
            yield from _route_table(r.original_router.routes, prefix + r.include_context.prefix)
        elif hasattr(r, "path"):
            for m in sorted(getattr(r, "methods", None) or {"GET"}):
                if m not in ("HEAD", "OPTIONS"):
                    yield m, prefix + r.path


def _served_routes(stack) -> list[tuple[str, str, str]]:
    """(app, method, path) from each served app's own OpenAPI table, so a new route is walked automatically."""
    from cluster.serve_app import enabled_apps

    out = []
    with stack.http() as c:
        for spec in enabled_apps(stack.config):
            prefix = spec.route_prefix.rstrip("/")
            doc = c.get(prefix + "/openapi.json")
            assert doc.status_code == 200, (spec.name, doc.text[:200])
            for path, ops in doc.json()["paths"].items():
                out += [(spec.name, m.upper(), prefix + path) for m in ops]
            out.append((spec.name, "GET", prefix + "/openapi.json"))
    return out


def _ui_routes(stack) -> list[tuple[str, str]]:
    import gradio as gr
    from fastapi import FastAPI

    from apps.gateway.app import ui_mount_options
    from apps.gateway.ui import build_ui

    app = gr.mount_gradio_app(FastAPI(), build_ui(stack.config), path="/ui", **ui_mount_options(stack.config))
    return sorted(set(_route_table(app.routes)))


def test_every_route_of_every_app_needs_a_key(serve_stack):
    from apps.security import UI_PUBLIC_ROUTES

    served = _served_routes(serve_stack)
    assert len({a for a, _, _ in served}) >= 5 and len(served) > 25
    ui = _ui_routes(serve_stack)
    assert any(p.startswith("/ui/gradio_api/") for _, p in ui)

    def public(method: str, path: str) -> bool:
        return (method, path) == ("GET", "/healthz") or (path.startswith("/ui/") and path[3:] in UI_PUBLIC_ROUTES) \
            or path in ("/ui", "/ui/")

    checked = 0
    for method, path in [(m, p) for _, m, p in served] + ui:
        if public(method, path):
            continue
        with serve_stack.http(key=None, source=next(_addresses), timeout=30) as c:
            r = c.request(method, _fill(path), content=b"{}", headers={"content-type": "application/json"})
        assert r.status_code == 401, (method, path, r.status_code, r.text[:200])
        checked += 1
    assert checked > 40


def test_the_public_routes_are_exactly_health_and_the_login_page(serve_stack):
    with serve_stack.http(key=None) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/ui/").status_code == 200  # the login page
        assert c.get("/ui/config").status_code in (200, 401)
        for path in ("/metrics", "/v1/status", "/v1/models", "/v1/rag/healthz", "/ui/gradio_api/info"):
            assert c.get(path).status_code == 401, path


@pytest.mark.parametrize("method,path", [
    ("POST", "/v1/rag/uidocs/upload?filename=a.md"),
    ("POST", "/v1/rag/uix/query"),
    ("POST", "/v1/rag/healthzz/search"),
    ("DELETE", "/v1/rag/ui-docs"),
    ("GET", "/v1/rag/healthz"),
    ("GET", "/v1/video/videos"),
    ("GET", "/v1/agent/runs"),
])
def test_names_that_look_public_are_not(serve_stack, method, path):
    with serve_stack.http(key=None, source=next(_addresses)) as c:
        r = c.request(method, path, content=b"# doc\n\ntext",
                      headers={"content-type": "application/octet-stream"})
    assert r.status_code == 401, r.text
    with serve_stack.http() as c:
        assert "uidocs" not in str(c.get("/v1/rag/collections").json())


def test_key_guessing_is_limited_per_address_and_counted(serve_stack):
    source = next(_addresses)
    with serve_stack.http(key="wrong-key", source=source) as c:
        codes = [c.get("/v1/models").status_code for _ in range(60)]
    assert codes[0] == 401 and codes[-1] == 429 and codes.count(401) <= 20
    with serve_stack.http(key=serve_stack.api_key, source=source) as c:
        assert c.get("/v1/models").status_code == 429  # locked before the key is looked at
    with serve_stack.http() as c:  # other addresses are not locked out
        assert c.get("/v1/models").status_code == 200
        metrics = c.get("/metrics").text
    assert 'conductor_auth_failures_total{outcome="locked_out"}' in metrics


def test_cached_answers_belong_to_their_user(serve_stack):
    from tests.stack import OTHER_KEY

    body = {"model": "echo", "temperature": 0, "messages": [{"role": "user", "content": "my secret plan"}]}
    with serve_stack.http() as a:
        a.post("/v1/chat/completions", json=body)
        assert a.post("/v1/chat/completions", json=body).headers.get("x-conductor-cache") == "hit"
    with serve_stack.http(key=OTHER_KEY) as b:
        r = b.post("/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.headers.get("x-conductor-cache") != "hit"


def test_cross_site_origins_are_refused(serve_stack):
    with serve_stack.http() as c:
        r = c.post("/v1/chat/completions", headers={"origin": "http://attacker.example"},
                   json={"model": "echo", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 403 and "cross-site" in r.json()["error"]["message"]
        r = c.post("/v1/chat/completions", headers={"origin": serve_stack.base_url},
                   json={"model": "echo", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 200


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_uploads_refuse_types_a_cross_site_form_can_send(serve_stack, ctype):
    headers = {"content-type": ctype} if ctype else {}
    with serve_stack.http() as c:
        for path in ("/v1/rag/formtest/upload?filename=a.md", "/v1/detect/upload?filename=m.gguf",
                     "/v1/video/ingest?name=a.mp4"):
            r = c.post(path, content=b"# hello\n\nworld", headers=headers)
            assert r.status_code == 415, (path, r.text)
        assert "formtest" not in str(c.get("/v1/rag/collections").json())
