"""Start the whole Conductor stack inside the test session's Ray cluster, on a free loopback port."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from cluster.config import ConductorConfig, load_config

API_KEY = "test-key-0123456789"
OTHER_KEY = "other-key-9876543210"  # a second user, for ownership and cache-isolation tests
ADMIN_KEY = "admin-key-5555555555"  # server.admin_users: manages virtual keys


@dataclass
class Stack:
    config: ConductorConfig
    base_url: str
    api_key: str
    apps: list[str]

    def client(self, **kw):  # an openai.OpenAI client pointed at the stack
        import openai

        return openai.OpenAI(base_url=self.base_url + "/v1", api_key=self.api_key, **kw)

    def http(self, key: str | None = "", source: str | None = None, **kw) -> httpx.Client:
        """A client with the tester's key (or `key`; None sends none), optionally from another loopback source
        address (the guard counts failed keys per client address)."""
        key = self.api_key if key == "" else key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if source:
            kw["transport"] = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=kw.pop("timeout", 120), **kw)

    def stop(self) -> None:
        from ray import serve

        try:
            serve.shutdown()
        except Exception:
            pass


def init_ray(num_cpus: int = 8) -> None:
    """A local Ray for a stack started outside the test session (the benchmarks), with Serve's transport as
    `conductor up` sets it for the head: in the environment before Ray's processes start and inherit it."""
    import ray

    os.environ.update(load_config().ray.serve_env())
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def test_config(tmp: Path, port: int, extra_models: list[dict] | None = None,
                agent_extra: dict | None = None, reranker: dict | None = None) -> ConductorConfig:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR__")}
    env.update({
        "CONDUCTOR__SERVER__PORT": str(port),
        "CONDUCTOR__SERVER__REQUIRE_API_KEY": "true",
        "CONDUCTOR__SERVER__MAX_BODY_BYTES": "65536",
        # Tests that guess keys do it from their own loopback source address (127.0.0.x), so the lockout they
        # trigger never locks out the rest of the suite on 127.0.0.1.
        "CONDUCTOR__SERVER__AUTH_FAILURES_PER_MINUTE": "20",
        "CONDUCTOR__RAG__DATA_DIR": str(tmp / "rag"),
        "CONDUCTOR__VIDEO__DATA_DIR": str(tmp / "video"),
        "CONDUCTOR__AGENT__DATA_DIR": str(tmp / "agent"),
        "CONDUCTOR__TRAINING__RUNS_DIR": str(tmp / "runs"),
        "CONDUCTOR__SERVER__ACCOUNTING__DATA_DIR": str(tmp / "gateway"),
        "CONDUCTOR__SERVER__ADMIN_USERS": '["admin"]',
    })
    cfg = load_config(environ=env)
    data = cfg.model_dump()
    data["breaker"] = {"failure_threshold": 1, "cooldown_s": 3.0}
    # Only requests to the tag "semantic-group" (the echo engine) meet the semantic cache.
    data["server"]["semantic_cache"] = {"enabled": True, "models": ["semantic-group"], "threshold": 0.9}
    data["models"].extend(extra_models or [])
    data["agent"].update(agent_extra or {})
    if reranker:  # served at /v1/rerank, and what RAG's searches with rerank on use
        data["reranker"] = reranker
        data["rag"]["reranker"] = "gateway"
    return ConductorConfig.model_validate(data)


def start_stack(tmp: Path, port: int, extra_models: list[dict] | None = None, only: list[str] | None = None,
                agent_extra: dict | None = None, reranker: dict | None = None) -> Stack:
    from cluster.serve_app import deploy

    os.environ["CONDUCTOR_API_KEYS"] = f"tester:{API_KEY},other:{OTHER_KEY},admin:{ADMIN_KEY}"
    os.environ["CONDUCTOR_API_KEY"] = API_KEY
    os.environ["CONDUCTOR_BASE_URL"] = f"http://127.0.0.1:{port}"
    cfg = test_config(tmp, port, extra_models, agent_extra, reranker)
    apps = deploy(cfg, only=only)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        raise RuntimeError("Conductor stack did not become healthy in 240 s")
    return Stack(cfg, base, API_KEY, apps)


def engine_pid(stack: Stack, backend: str = "smollm2-llamacpp") -> int | None:
    """The process of the Serve replica hosting `backend`'s engine (from /v1/status)."""
    with stack.http() as c:
        return c.get("/v1/status").json()["engines"][backend].get("pid")


def kill_under_load(stack: Stack, seconds: float = 60, clients: int = 8, kills: int = 2) -> tuple[list[int], int]:
    """`clients` threads send small chats for `seconds` while the llama.cpp replica is SIGKILLed `kills` times
    (at 10 s, then every 25 s). Returns every request's status (0: the connection failed) and the kill count."""
    import os
    import signal
    import threading

    stop, codes, lock = threading.Event(), [], threading.Lock()
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

    def client() -> None:
        with stack.http(timeout=120) as c:
            while not stop.is_set():
                try:
                    code = c.post("/v1/chat/completions", json=body).status_code
                except httpx.HTTPError:
                    code = 0
                with lock:
                    codes.append(code)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    done, t0 = 0, time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            if done < kills and time.monotonic() - t0 > 10 + 25 * done and (pid := engine_pid(stack)):
                os.kill(pid, signal.SIGKILL)
                done += 1
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(180)
    return codes, done
