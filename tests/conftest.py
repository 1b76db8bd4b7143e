"""Session-wide real components shared by every test module.

- `ray_cluster`: one local Ray cluster for the whole run (Ray Train, Ray Data and Serve all use it).
- `serve_stack`: the whole Conductor Serve stack on free loopback ports (see tests/stack.py).
- `minilm`: the packaged sentence-transformers embedder, loaded once.
- `shared_dir`: ../shared when present (tests that need it skip with a reason when it is not).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach a model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _serve_env() -> None:
    """Serve's transport as the default config sets it for a local head (RayConfig.serve_env), in place before
    this process imports Serve and before `ray.init` starts the processes that inherit it."""
    from cluster.config import load_config

    os.environ.update(load_config().ray.serve_env())


_serve_env()


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, for a server a test starts. Taken from 20000-29999: above Ray's worker
    ports (10002-19999) and below the kernel's ephemeral range (32768-60999 here), where bind(0) draws from. A port
    that bind(0) gave is free again at once, and the next process to bind(0) can be handed it: Ray starts a dozen
    such before its dashboard agent binds the metrics port a test chose, and CI once failed `conductor up` on it
    (EADDRINUSE). Each port is handed out once per test session."""
    import random

    for _ in range(500):
        port = random.randrange(20000, 30000)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port in 20000-29999")


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A local Ray head with more logical CPUs than cores, so Serve, Train and Data can share 2 real cores."""
    import ray

    from deployments.mount_guard import CALLBACK, DIGESTS_ENV, PROXY_CALLBACK_ENV

    # As the local head runs Serve's proxy (cluster/runtime.py): with the engine-mount guard, its keys file here.
    os.environ[PROXY_CALLBACK_ENV] = CALLBACK
    os.environ[DIGESTS_ENV] = str(tmp_path_factory.mktemp("serve") / "mount-keys.json")
    if not ray.is_initialized():
        ray.init(
            num_cpus=8,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                      "TOKENIZERS_PARALLELISM": "false"}},
        )
    yield ray
    # Serve (if started) is torn down by its own fixture; Ray itself at the end of the session.
    ray.shutdown()


@pytest.fixture(scope="session")
def minilm():
    from deployments.embedder_local import shared_embedder

    return shared_embedder("packaged:minilm")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    d = REPO.parent / "shared"
    if not d.is_dir():
        pytest.skip("../shared is not present on this machine")
    return d


@pytest.fixture(scope="session")
def hosted_apis():
    """Real OpenAI-protocol HTTP servers standing in for hosted APIs (the network edge we cannot reach): a and b
    for fallback chains, stable, canary and shadow for a rollout."""
    from tests.fake_openai import FakeOpenAI

    fakes = {name: FakeOpenAI(name).start() for name in ("a", "b", "stable", "canary", "shadow")}
    yield fakes
    for fake in fakes.values():
        fake.stop()


@pytest.fixture(scope="session")
def trained_export(tmp_path_factory) -> Path:
    """A model trained from scratch by Conductor (debug preset, a few steps, no Ray) exported as a HF Llama dir."""
    from dataclasses import replace

    import torch

    from training.config import preset
    from training.export import export_hf
    from training.worker_loop import local_reporter, run_loop
    from training.ray_trainer import prepare_run

    run = tmp_path_factory.mktemp("trained") / "run"
    cfg = replace(preset("debug"), max_iters=4, eval_interval=4, max_corpus_bytes=80_000)
    cfg = prepare_run(cfg, run, "debug", 1)
    run_loop(cfg.to_dict(), 0, 1, torch.device("cpu"), run, local_reporter(run))
    return export_hf(run / "checkpoint_000004", run.parent / "hf")


def _extra_models(hosted, trained: Path) -> list[dict]:
    """Models the serving tests need beside the defaults: a hosted chain (a -> b), a local-dead -> hosted one, a
    canary rollout, an alias and a tag."""
    def hosted_backend(name: str, url: str) -> dict:
        return {"name": name, "engine": "openai", "base_url": url, "model": "fake", "api_key_env": "FAKE_KEY",
                "timeout_s": 5, "cost_per_1k_input": 1.0, "cost_per_1k_output": 2.0}

    return [
        {"id": "hosted", "tags": ["demo-group"],
         "backends": [hosted_backend("hosted-a", hosted["a"].base_url),
                      hosted_backend("hosted-b", hosted["b"].base_url)]},
        # A canary rollout: steps only by hand during the tests (a long interval), analysed over few samples.
        {"id": "canaried", "backends": [hosted_backend(f"roll-{v}", hosted[v].base_url)
                                        for v in ("stable", "canary", "shadow")],
         "rollout": {"stable": "roll-stable", "canary": "roll-canary", "shadow": "roll-shadow", "steps": [50, 100],
                     "step_interval_s": 3600, "min_samples": 8, "window_s": 120, "max_error_rate_increase": 0.2}},
        {"id": "flaky", "backends": [hosted_backend("dead-port", f"http://127.0.0.1:{free_port()}/v1"),
                                     hosted_backend("flaky-b", hosted["b"].base_url)]},
        # Priced as a hosted API would be, so virtual keys' budgets mean something for a local engine too.
        {"id": "echo", "aliases": ["echo-alias"], "tags": ["demo-group", "semantic-group"],
         "backends": [{"name": "echo-local", "engine": "echo", "resources": {"num_cpus": 0.05},
                       "cost_per_1k_input": 1.0, "cost_per_1k_output": 1.0}]},
        # A priced stream that drips one word every 0.1 s, so a client can leave in the middle of it.
        {"id": "echo-drip", "backends": [{"name": "echo-drip", "engine": "echo", "options": {"delay_s": 4.0},
                                          "resources": {"num_cpus": 0.05},
                                          "cost_per_1k_input": 1.0, "cost_per_1k_output": 1.0}]},
        # One slow request at a time and one waiting: the rest must be shed with 503 + Retry-After.
        {"id": "tiny-queue", "backends": [{"name": "echo-slow", "engine": "echo", "options": {"delay_s": 2.0},
                                           "resources": {"num_cpus": 0.05, "max_ongoing_requests": 1,
                                                         "max_queued_requests": 1}}]},
        {"id": "trained", "backends": [{"name": "trained-hf", "engine": "transformers", "model": str(trained),
                                        "context_length": 256, "threads": 1, "device": "cpu",
                                        "resources": {"num_cpus": 0.1}}]},
    ]


@pytest.fixture(scope="session")
def scripted_chat():
    """A scripted OpenAI chat API (tests/agent/scripted.py) served to the stack as model "scripted": the model's
    turns are the one stand-in when a test needs an agent to call a given tool. Tests set `.turns`."""
    from tests.agent.scripted import ScriptedChatServer

    with ScriptedChatServer() as srv:
        yield srv


def _mcp_agent(tmp: Path) -> dict:
    """A real external MCP server (tests/agent/mcp_servers.py over stdio) and an agent that may use its forecast."""
    root = Path(__file__).resolve().parents[1]
    return {"mcp_servers": [{"name": "weather", "command": [sys.executable, "-m", "tests.agent.mcp_servers"],
                             "env": {"PYTHONPATH": str(root), "MCP_CALL_LOG": str(tmp / "mcp-calls.jsonl")}}],
            "agents": [{"name": "forecaster", "instructions": "Answer weather questions with the weather tools.",
                        "mcp_tools": ["weather.forecast"]}]}


@pytest.fixture(scope="session")
def serve_stack(ray_cluster, hosted_apis, trained_export, scripted_chat, tmp_path_factory):
    """The full Conductor stack (gateway + LLM + embedder + apps) on a free port. Yields tests.stack.Stack."""
    from tests.stack import start_stack

    tmp = tmp_path_factory.mktemp("stack")
    models = _extra_models(hosted_apis, trained_export) + [
        {"id": "scripted", "backends": [{"name": "scripted-chat", "engine": "openai", "model": "scripted",
                                         "base_url": scripted_chat.base_url + "/v1", "timeout_s": 30}]}]
    from tests.rag.rerank_model import write_rerank_gguf

    # A stand-in GGUF reranker (tests/rag/rerank_model.py): few documents a request, as each is a model pass.
    reranker = {"id": "test-reranker", "model": str(write_rerank_gguf(tmp / "rerank.gguf")), "max_documents": 8,
                "resources": {"num_cpus": 0.05}}
    stack = start_stack(tmp, port=free_port(), extra_models=models, agent_extra=_mcp_agent(tmp), reranker=reranker)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """A real PostgreSQL server (Debian's postgresql, tests/pg_server.py). Skips when the binaries are absent."""
    from tests.pg_server import start_postgres

    server = start_postgres()
    if server is None:
        pytest.skip("PostgreSQL is not installed (scripts/system-deps.sh installs it)")
    url, stop = server
    yield url
    stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on a free loopback port, no persistence. Skips when Debian's redis-server is absent."""
    import shutil
    import subprocess
    import time

    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (scripts/system-deps.sh installs it)")
    port = free_port()
    proc = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path_factory.mktemp("redis"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def forked_child_hazard():
    """A live thread whose thread-local object's destructor blocks, but only in a forked child: what PyAV's scaler
    context did in the video service (it waited for its own worker threads, which a fork does not copy). Code that
    runs Python between fork and exec (`preexec_fn`) stalls in that child, and its caller with it. Yields a call
    that runs a function in a thread and says whether it returned within `seconds`. The block lasts `stall_s`, not
    forever, so a stalled child still ends (and lets go of the test run's pipes) before teardown finishes."""
    import threading
    import time

    stall_s, parent, workers = 20.0, os.getpid(), []

    class BlocksInAForkedChild:
        def __del__(self):
            if os.getpid() != parent:
                time.sleep(stall_s)

    local, ready, done = threading.local(), threading.Event(), threading.Event()

    def hold() -> None:
        local.obj = BlocksInAForkedChild()
        ready.set()
        done.wait()

    threading.Thread(target=hold, daemon=True).start()
    ready.wait()

    def returns_within(fn, seconds: float = 15.0) -> bool:
        assert seconds < stall_s, "a stall must outlast the wait to be seen"
        worker = threading.Thread(target=fn, daemon=True)
        workers.append(worker)
        worker.start()
        worker.join(seconds)
        return not worker.is_alive()

    yield returns_within
    done.set()
    for worker in workers:
        worker.join(stall_s + 30)
