"""The agent over HTTP, mounted under `/v1/agent`:

  GET  /agents                     agents and their tools
  POST /runs                       start a run {task, agent, model, stream}; stream=true (default) sends
                                   server-sent events: `run`, one `step` per step, then `done`
  GET  /runs                       recent runs
  GET  /runs/{run_id}              one run's trace
  POST /runs/{run_id}/approval     approve/reject the pending calls {approve | decisions}, then continue
                                   (streamed like /runs)

Runs execute in a worker thread (the loop is blocking HTTP to the gateway); events cross to the response through
a queue. A paused run lives in the trace store, so any replica sharing the data dir can resume it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request  # at module level: route annotations are resolved here (postponed evaluation)
from pydantic import BaseModel, Field

from cluster.config import ConductorConfig, config_from_dict


class RunRequest(BaseModel):
    task: str = Field(..., min_length=1, max_length=20000, description="What the agent should do.")
    agent: str | None = Field(None, max_length=64, description="Agent name; default agent.default_agent.")
    model: str | None = Field(None, max_length=200, description="Chat model id; default agent.chat_model.")
    session_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Continue this "
                                   "conversation (yours); a new id starts one.")
    stream: bool = Field(True, description="Server-sent events of each step, or one JSON trace at the end.")


class ResumeRequest(BaseModel):
    model_config = {"extra": "forbid"}
    stream: bool = Field(True, description="Stream the continued run's events (SSE).")


class ApprovalRequest(BaseModel):
    approve: bool | None = Field(None, description="One decision for every pending call.")
    decisions: dict[str, bool] | None = Field(None, description="Per call id: true approves, false rejects.")
    stream: bool = Field(True, description="Stream the continued run as server-sent events.")


def _sse(event: dict[str, Any]) -> str:
    return f"event: {event.get('type', 'message')}\ndata: {json.dumps(event, default=str)}\n\n"


class RunCancelled(BaseException):
    """Raised into a run by its event callback once its client has gone (a BaseException, so the loop's guard
    against broken listeners does not swallow it): the run stops at its next event instead of running on."""


async def _stream(work: Callable[[Callable[[dict], None]], Any]) -> AsyncIterator[str]:
    """Run `work(on_event)` in a thread and yield its events as SSE; errors become an `error` event. A client
    that disconnects cancels this generator, which stops the run at its next step."""
    import asyncio

    loop = asyncio.get_running_loop()
    q: asyncio.Queue = asyncio.Queue()
    gone = threading.Event()

    def put(event: dict | None) -> None:
        loop.call_soon_threadsafe(q.put_nowait, event)

    def emit(event: dict) -> None:
        if gone.is_set():
            raise RunCancelled()
        put(event)

    def target() -> None:
        try:
            work(emit)
        except RunCancelled:
            return
        except (ValueError, KeyError) as e:
            put({"type": "error", "message": str(e.args[0] if e.args else e)})
        except Exception as e:  # noqa: BLE001 - the stream must end cleanly whatever happened
            put({"type": "error", "message": f"internal error: {type(e).__name__}"})
        put(None)

    threading.Thread(target=target, daemon=True, name="agent-run").start()
    try:
        while (event := await q.get()) is not None:
            yield _sse(event)
        yield "data: [DONE]\n\n"
    finally:
        gone.set()


def create_app(config: ConductorConfig, runner_factory: Callable[[str | None], Any]) -> Any:
    """The FastAPI app (testable without Serve). `runner_factory(model)` builds an AgentRunner."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    from apps.common import install_common

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        yield
        runner_factory(None).registry.close()  # stops the MCP servers this replica started

    app = FastAPI(title="Conductor agent", lifespan=lifespan)
    install_common(app, config)

    @app.get("/mcp")
    def mcp_servers(connect: bool = False) -> dict[str, Any]:
        """The configured MCP servers, their tools and state; `connect=true` starts those not yet started."""
        registry = runner_factory(None).registry
        servers = []
        for provider in registry.providers:
            if connect:
                provider.connect_all()
            servers += provider.status()
        return {"servers": servers}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/agents")
    def agents() -> dict[str, Any]:
        runner = runner_factory(None)
        return {"default": config.agent.default_agent, "agents": [
            {"name": a.name, "description": a.description, "tools": [t.name for t in runner.tools_for(a)],
             "dangerous": [t for t in a.tools if (x := runner.registry.get(t)) is not None and x.dangerous]}
            for a in runner.agents.values()]}

    _run_routes(app, config, runner_factory)
    _approval_route(app, config, runner_factory)
    return app


def _respond(work: Callable[..., Any], stream: bool) -> Any:
    """A run's answer: streamed as events, or the finished trace (a run that cannot start is a 400)."""
    from fastapi.responses import StreamingResponse

    from apps.common import APIError

    if stream:
        return StreamingResponse(_stream(work), media_type="text/event-stream")
    try:
        return work().public()
    except ValueError as e:
        raise APIError(400, str(e)) from None


def _owned(config: ConductorConfig, runner: Any, run_id: str, request: Request) -> Any:
    """The run if this caller may see it: its owner or an admin. Anyone else gets the same 404 as for a run that
    does not exist."""
    from apps.common import APIError
    from apps.security import is_admin, request_user

    try:
        trace = runner.store.get(run_id)
    except KeyError as e:
        raise APIError(404, str(e.args[0]), code="run_not_found") from None
    user = request_user(request)
    if trace.owner != user and not is_admin(config, user):
        raise APIError(404, f"no run {run_id!r}", code="run_not_found")
    return trace


def _run_routes(app: Any, config: ConductorConfig, runner_factory: Callable[[str | None], Any]) -> None:
    from apps.common import APIError
    from apps.security import is_admin, request_user

    @app.post("/runs")
    def start(req: RunRequest, request: Request) -> Any:
        runner = runner_factory(req.model)
        owner = request_user(request)
        if (req.agent or config.agent.default_agent) not in runner.agents:
            raise APIError(400, f"unknown agent {req.agent!r}; known agents: {', '.join(sorted(runner.agents))}",
                           param="agent")
        if req.session_id is not None:
            from apps.agent import sessions

            try:  # before the stream opens: another user's session is a 404, like any run of theirs
                sessions.load(runner.store, req.session_id, owner)
            except KeyError as e:
                raise APIError(404, str(e.args[0]), code="session_not_found") from None

        def work(emit: Callable[[dict], None] | None = None) -> Any:
            try:
                return runner.run(req.task, req.agent, on_event=emit, owner=owner, session_id=req.session_id)
            finally:
                runner.model.close()  # one HTTP client per run

        return _respond(work, req.stream)

    @app.get("/runs")
    def list_runs(request: Request, limit: int = 50) -> dict[str, Any]:
        user = request_user(request)
        owner = None if is_admin(config, user) else user
        return {"runs": runner_factory(None).store.list(max(1, min(limit, 500)), owner=owner)}

    @app.get("/sessions")
    def list_sessions(request: Request, limit: int = 50) -> dict[str, Any]:
        user = request_user(request)
        store = runner_factory(None).store
        return {"sessions": store.list_sessions(None if is_admin(config, user) else user, max(1, min(limit, 500)))}

    @app.get("/runs/{run_id}")
    def get_run(run_id: str, request: Request) -> dict[str, Any]:
        return _owned(config, runner_factory(None), run_id, request).public()


def _approval_route(app: Any, config: ConductorConfig, runner_factory: Callable[[str | None], Any]) -> None:
    from apps.common import APIError

    resuming: set[str] = set()
    lock = threading.Lock()

    @app.post("/runs/{run_id}/approval")
    def approval(run_id: str, req: ApprovalRequest, request: Request) -> Any:
        runner = runner_factory(None)
        trace = _owned(config, runner, run_id, request)  # only the run's owner (or an admin) approves its code
        if trace.status != "paused":
            raise APIError(409, f"run {run_id} is not waiting for approval (status {trace.status})")
        if (req.approve is None) == (req.decisions is None):
            raise APIError(400, "give exactly one of `approve` (all calls) or `decisions` (per call id)")
        decisions = req.decisions or {p.id: bool(req.approve) for p in trace.pending}
        unknown = set(decisions) - {p.id for p in trace.pending}
        if unknown:
            raise APIError(400, f"not pending in this run: {', '.join(sorted(unknown))}")
        with lock:  # one resumption per run: a double click must not run the approved code twice
            if run_id in resuming:
                raise APIError(409, f"run {run_id} is already being resumed")
            resuming.add(run_id)

        def work(emit: Callable[[dict], None] | None = None) -> Any:
            try:
                return runner.resume(trace, decisions, on_event=emit)
            finally:
                resuming.discard(run_id)
                runner.model.close()

        return _respond(work, req.stream)

    @app.post("/runs/{run_id}/resume")
    def resume(run_id: str, req: ResumeRequest, request: Request) -> Any:
        """Continue a run interrupted mid-run (its replica died, the server restarted) from its last step."""
        from apps.agent.durable import interruption

        runner = runner_factory(None)
        trace = _owned(config, runner, run_id, request)
        why = interruption(trace)
        if why:
            raise APIError(409, why)

        def work(emit: Callable[[dict], None] | None = None) -> Any:
            try:
                return runner.resume_interrupted(trace, on_event=emit)
            finally:
                runner.model.close()

        return _respond(work, req.stream)


def default_runner_factory(config: ConductorConfig) -> Callable[[str | None], Any]:
    """One tool registry and store per replica; a light runner per request (the model id may differ)."""
    from apps.agent import build_runner
    from apps.agent.builtin import builtin_registry
    from apps.agent.run_store import open_run_store
    from apps.client import ConductorClient

    # The RAG and video apps own their single-process stores: the agent's searches go through their routes.
    registry = builtin_registry(config, max_output_chars=config.agent.max_observation_chars,
                                apps_client=lambda: ConductorClient.for_config(config, timeout=60))
    store = open_run_store(config.agent)
    return lambda model: build_runner(config, model=model, registry=registry, store=store)


def build_app(args: dict[str, Any]) -> Any:
    """Serve entry point: args = {"config": <dict>}."""
    config = config_from_dict(args["config"])
    from deployments.secrets import with_secrets

    # The replicas get the runs database's URL and the MCP servers' tokens, and no other secret.
    opts = with_secrets(config.agent.resources.serve_options("AgentIngress"),
                        [config.agent.store_url_env, *(s.bearer_token_env for s in config.agent.mcp_servers)])
    from apps.common import config_ingress_app

    return config_ingress_app(lambda c: create_app(c, default_runner_factory(c)), opts, config)
