"""`conductor agent "task" [--agent NAME] [--json]` — run the agent against the chat API and print the answer.

The chat API defaults to Conductor's gateway (CONDUCTOR_BASE_URL / CONDUCTOR_API_KEY, model agent.chat_model);
`--local` instead runs the packaged SmolLM2 in-process behind a loopback endpoint (no stack needed). A run that
stops for approval prints the pending calls; `--resume RUN_ID --approve|--reject` continues it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

import click


def _print_step(event: dict) -> None:
    if event.get("type") != "step":
        return
    s = event["step"]
    indent = "  " * (s.get("depth") or 0)
    if s["kind"] != "model":
        click.echo(f"{indent}[{s['agent']}] {s['kind']}: {s.get('note')}", err=True)
        return
    if s.get("error"):
        click.echo(f"{indent}[{s['agent']}] invalid step: {s['error']}", err=True)
    for c in s.get("calls", []):
        out = c.get("result") if c.get("status") in ("ok", "repeated") else c.get("error") or c.get("status")
        click.echo(f"{indent}[{s['agent']}] {c['tool']}({json.dumps(c.get('args'))}) -> "
                   f"{str(out)[:200]!s}", err=True)


@contextlib.contextmanager
def _endpoint(local: bool, base_url: str | None):
    if not local:
        yield base_url
        return
    from apps.agent.local_chat_server import LocalChatServer
    from deployments.packaged import PackagedModelMissing

    try:
        server = LocalChatServer()
    except (PackagedModelMissing, ImportError) as e:
        raise click.ClickException(f"--local needs the packaged model: {e}") from None
    with server:
        yield server.base_url


def _tools(config, local: bool):  # type: ignore[no-untyped-def]
    """A running server owns the RAG and video stores: search through its routes. Without one (or --local),
    open them in-process."""
    from apps.agent.builtin import builtin_registry
    from apps.client import running_server

    server = None if local else running_server()
    factory = None
    if server is not None:
        server.close()
        from apps.client import ConductorClient, cli_api_key

        factory = lambda: ConductorClient(server.base_url, cli_api_key(), timeout=60)  # noqa: E731
    return builtin_registry(config, max_output_chars=config.agent.max_observation_chars, apps_client=factory)


@click.command("agent")
@click.argument("task", required=False)
@click.option("--agent", "agent_name", default=None, help="Agent to run (default: config agent.default_agent).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document: answer, steps, stopped_reason.")
@click.option("--base-url", default=None, envvar="CONDUCTOR_BASE_URL",
              help="Chat API base URL (default: $CONDUCTOR_BASE_URL, else the configured server).")
@click.option("--api-key", default=None, envvar="CONDUCTOR_API_KEY", help="API key (default: $CONDUCTOR_API_KEY).")
@click.option("--model", default=None, help="Model id (default: config agent.chat_model).")
@click.option("--mode", type=click.Choice(["auto", "native", "react"]), default=None, help="Tool-calling protocol.")
@click.option("--max-steps", type=click.IntRange(1, 100), default=None, help="Step limit of the run.")
@click.option("--yes", "approve_all", is_flag=True, help="Approve dangerous tools (the Python sandbox) up front.")
@click.option("--local", is_flag=True, help="Run the packaged SmolLM2 in-process instead of calling a server.")
@click.option("--resume", "resume_id", default=None,
              help="Continue a run: one waiting for approval (with --approve/--reject) or one interrupted mid-run.")
@click.option("--approve/--reject", "approve", default=None, help="With --resume: decision for the pending calls.")
@click.option("--session", "session_id", default=None, help="Continue this conversation (a new id starts one).")
@click.option("--config", "config_path", default=None, help="Config file (default: cluster/conductor.yaml).")
def agent(task, agent_name, as_json, base_url, api_key, model, mode, max_steps, approve_all, local, resume_id,
          approve, session_id, config_path) -> None:
    """Run TASK with a tool-using agent and print the final answer."""
    from apps.agent import build_runner
    from cluster.config import load_config

    if resume_id is None and not (task and task.strip()):
        raise click.UsageError("give a TASK (or --resume RUN_ID --approve/--reject)")
    try:
        config = load_config(config_path)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    overrides = {k: v for k, v in {"mode": mode, "max_steps": max_steps}.items() if v is not None}
    with _endpoint(local, base_url) as url:
        runner = build_runner(config, base_url=url, api_key=api_key, model=model,
                              registry=_tools(config, local), **overrides)
        listener = None if as_json else _print_step
        try:
            if resume_id and approve is None:  # a run interrupted mid-run: continue from its last step
                trace = runner.resume_interrupted(resume_id, on_event=listener)
            elif resume_id:
                trace = runner.store.get(resume_id)
                trace = runner.resume(trace, {p.id: approve for p in trace.pending}, on_event=listener)
            else:
                dangerous = {t for t in runner.registry.names() if runner.registry.get(t).dangerous}
                trace = runner.run(task, agent_name, on_event=listener,
                                   auto_approve=dangerous if approve_all else None, session_id=session_id)
        except KeyError as e:
            raise click.ClickException(str(e.args[0]) if e.args else str(e)) from None
        except ValueError as e:
            raise click.UsageError(str(e)) from None
    _report(trace, as_json)


def _report(trace, as_json: bool) -> None:
    if as_json:
        doc = {"run_id": trace.run_id, "answer": trace.answer, "stopped_reason": trace.stopped_reason,
               "pending": [p.model_dump() for p in trace.pending], "totals": trace.totals,
               "steps": [s.model_dump() for s in trace.steps]}
        click.echo(json.dumps(doc, default=str))
    elif trace.stopped_reason == "final_answer":
        click.echo(trace.answer)
    elif trace.stopped_reason == "needs_approval":
        for p in trace.pending:
            click.echo(f"pending approval: {p.tool} {json.dumps(p.args)[:500]}")
        click.echo(f"resume with: conductor agent --resume {trace.run_id} --approve  (or --reject)")
    else:
        note = next((s.note for s in reversed(trace.steps) if s.kind == "stop"), trace.stopped_reason)
        click.echo(f"stopped without an answer: {note}", err=True)
    if trace.stopped_reason == "error":
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    agent(prog_name=os.path.basename(sys.argv[0]))
