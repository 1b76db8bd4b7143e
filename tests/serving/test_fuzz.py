"""Generated requests against every route of every served app: 0 answered 5xx, none past its deadline, and the
stack healthy with the same replicas afterwards. CONDUCTOR_FUZZ_EXAMPLES sets the count (`make bench` runs
10,000 through benchmarks/bench_fuzz.py)."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz_requests import requests_for, send, served_routes

pytestmark = [pytest.mark.serve, pytest.mark.slow]
EXAMPLES = int(os.environ.get("CONDUCTOR_FUZZ_EXAMPLES", "600"))
DEADLINE_S = 60.0
SEEN: Counter = Counter()


@pytest.fixture(scope="module")
def fuzz_client(serve_stack):
    from cluster.serve_app import enabled_apps

    # Its own loopback source address: nothing the fuzzer does can lock out the rest of the suite.
    client = serve_stack.http(source="127.0.9.9", timeout=DEADLINE_S)
    routes = served_routes(client, [s.route_prefix for s in enabled_apps(serve_stack.config)])
    with serve_stack.http() as c:
        before = c.get("/v1/status").json()
    yield client, routes, before
    client.close()


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_generated_requests_are_never_5xx(fuzz_client, data):
    client, routes, _ = fuzz_client
    req = data.draw(requests_for(routes))
    status = send(client, req, DEADLINE_S)
    SEEN[status] += 1
    assert status != 599, f"hung past {DEADLINE_S}s: {req.method} {req.path} {req.body[:200]!r}"
    assert status < 500, f"{status} for {req.method} {req.path} ({req.content_type}) {req.body[:300]!r}"


def test_after_fuzzing_the_stack_is_healthy_with_the_same_replicas(fuzz_client, serve_stack):
    _, routes, before = fuzz_client
    assert sum(SEEN.values()) >= min(EXAMPLES, 100), SEEN
    assert sum(n for s, n in SEEN.items() if 400 <= s < 500) > sum(SEEN.values()) // 3, SEEN  # it hit validation
    assert len({r.template.split("/")[2] for r in routes if r.template.count("/") > 1}) >= 1
    with serve_stack.http() as c:
        assert c.get("/healthz").status_code == 200
        after = c.get("/v1/status").json()
    assert after["gateway_pid"] == before["gateway_pid"]
    assert after["engines"]["smollm2-llamacpp"]["pid"] == before["engines"]["smollm2-llamacpp"]["pid"]
    for app in after["applications"].values():
        assert app["status"].endswith("RUNNING"), after["applications"]
    print(f"fuzz statuses: {dict(sorted(SEEN.items()))}")
