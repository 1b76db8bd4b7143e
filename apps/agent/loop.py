"""The agent loop: ask the model for a step, validate it, run tools (in parallel), feed results back, stop.

Stopping is always explicit, with a reason: a final answer, the step limit, the token/time budget, a repeated
call or cycle, a call waiting for a person's approval, or a model/API error. The first identical repeat of a
call is not re-run: the model gets the earlier result back and is told (and, under constrained decoding, forced)
to answer; the `repeat_limit`-th identical call, or a cycle of calls repeated twice, stops the run.
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from apps.agent import protocol as P
from apps.agent.agents import ASK_PREFIX, HANDOFF_PREFIX, AgentSpec, ask_tool, check_agents, handoff_tool
from apps.agent.chat_model import ChatModel, ModelError
from apps.agent import sessions
from apps.agent.durable import driving, finish_interrupted, interruption
from apps.agent.guardrails import Guardrails, classifier
from apps.agent.tools import Tool, ToolRegistry
from apps.agent.trace import CallRecord, PendingCall, Step, Trace, TraceStore
from apps.client import acting_for
from cluster.config import AgentConfig

Event = Callable[[dict[str, Any]], None]
REJECTED = "A person rejected this call. Do not try it again; continue without it or give your final answer."


class AgentRunner:
    def __init__(self, model: ChatModel, registry: ToolRegistry, agents: dict[str, AgentSpec],
                 cfg: AgentConfig | None = None, store: TraceStore | None = None):
        self.model, self.registry, self.agents = model, registry, agents
        self.cfg = cfg or AgentConfig()
        self.store = store
        self._guards: dict[str, Guardrails] = {}
        check_agents(agents, set(registry.names()))

    # --- public API ------------------------------------------------------------------------------------------
    def mode_for(self, model_id: str | None) -> str:
        if self.cfg.mode != "auto":
            return self.cfg.mode
        return "native" if model_id and model_id in self.cfg.native_models else "react"

    def run(self, task: str, agent: str | None = None, on_event: Event | None = None,
            auto_approve: set[str] | None = None, owner: str = "local", session_id: str | None = None) -> Trace:
        name = agent or self.cfg.default_agent
        if name not in self.agents:
            raise ValueError(f"unknown agent {name!r}; known agents: {', '.join(sorted(self.agents))}")
        if not task or not task.strip():
            raise ValueError("the task is empty")
        trace = Trace(task=task, agent=name, model=self.model.model, mode=self.mode_for(self.model.model),
                      owner=owner)
        messages = self._start_messages(name, task, trace.mode)
        if session_id is not None:  # the conversation so far, between the instructions and the new task
            if self.store is None:
                raise ValueError("sessions need a run store")
            earlier = sessions.load(self.store, session_id, owner)
            messages = messages[:-1] + sessions.history_messages(earlier, self.cfg.session_max_tokens) + messages[-1:]
        trace.state = {"agent": name, "messages": messages, "sigs": [], "session_id": session_id,
                       "results": {}, "tokens": 0, "elapsed_s": 0.0, "model_steps": 0, "force_final": False,
                       "auto_approve": sorted(auto_approve or [])}
        _emit(on_event, {"type": "run", "run_id": trace.run_id, "agent": name, "task": task, "mode": trace.mode})
        with acting_for(trace.owner), driving(trace):  # its tools reach other apps (RAG, video) as its owner
            trip = self._guard(name).check_input(task, "the task")
            if trip:  # before the model has read a word of it
                return self._stop(trace, "guardrail", trip, on_event, 0)
            self._checkpoint(trace)
            return self._drive(trace, on_event)

    def _guard(self, agent: str) -> Guardrails:
        """The agent's guardrails, compiled once per runner (they are checked on every step)."""
        if agent not in self._guards:
            self._guards[agent] = Guardrails(self.agents[agent].guardrails or self.cfg.guardrails,
                                             classifier(lambda: self.model))
        return self._guards[agent]

    def resume_interrupted(self, trace: Trace | str, on_event: Event | None = None) -> Trace:
        """Continue a run whose process died mid-run, from its last completed step (apps/agent/durable.py)."""
        if isinstance(trace, str):
            if self.store is None:
                raise KeyError("no trace store configured")
            trace = self.store.get(trace)
        why = interruption(trace)
        if why:
            raise ValueError(why)
        st = trace.state
        st.pop("pending_calls", None)  # of a model turn that did not complete: it is asked again
        note = finish_interrupted(self, trace)
        self._record(trace, Step(index=len(trace.steps), agent=st["agent"], kind="resume", note=note), on_event)
        _emit(on_event, {"type": "run", "run_id": trace.run_id, "agent": st["agent"], "task": trace.task,
                         "mode": trace.mode, "resumed": True})
        with acting_for(trace.owner), driving(trace):
            return self._drive(trace, on_event)

    def _checkpoint(self, trace: Trace) -> None:
        """Persist the run after a completed step, so a run whose process dies resumes from here."""
        if self.store is not None:
            self.store.save(trace)

    def resume(self, trace: Trace | str, decisions: dict[str, bool], on_event: Event | None = None) -> Trace:
        """Apply approve (True) / reject (False) to every pending call, then continue the run."""
        if isinstance(trace, str):
            if self.store is None:
                raise KeyError("no trace store configured")
            trace = self.store.get(trace)
        if trace.status != "paused" or not trace.pending:
            raise ValueError(f"run {trace.run_id} is not waiting for approval (status {trace.status})")
        missing = [p.id for p in trace.pending if p.id not in decisions]
        if missing:
            raise ValueError(f"no decision for pending call(s): {', '.join(missing)}")
        st, start = trace.state, time.perf_counter()
        done = {o["id"]: o for o in st.pop("step_obs", [])}
        # The model step that asked for the calls: its records get the outcome, so the trace shows it in place.
        records = {c.id: c for p in trace.pending if p.step < len(trace.steps) for c in trace.steps[p.step].calls}
        for p in trace.pending:
            rec = records.get(p.id) or CallRecord(id=p.id, tool=p.tool, args=p.args, dangerous=True)
            if decisions[p.id]:
                self._execute([(P.Call(p.id, p.tool, p.args), rec)])
                if rec.status == "ok":
                    st["results"][_sig(p.tool, p.args)] = rec.result
            else:
                rec.status, rec.error = "rejected", REJECTED
            done[p.id] = {"id": p.id, "tool": p.tool, "text": rec.result or rec.error or "", "err": rec.status != "ok"}
        note = ", ".join(f"{p.tool} {'approved' if decisions[p.id] else 'rejected'}" for p in trace.pending)
        self._record(trace, Step(index=len(trace.steps), agent=st["agent"], kind="approval", note=note,
                                 calls=[records[p.id] for p in trace.pending if p.id in records]), on_event)
        order = st.pop("step_order", list(done))
        obs = [(P.Call(done[i]["id"], done[i]["tool"], None), done[i]["text"], done[i]["err"]) for i in order]
        st["messages"] += P.observation_messages(trace.mode, obs, task=trace.task)
        trace.pending, trace.status = [], "running"
        st["elapsed_s"] += time.perf_counter() - start
        with acting_for(trace.owner), driving(trace):  # its tools reach other apps (RAG, video) as its owner
            return self._drive(trace, on_event)

    # --- the loop --------------------------------------------------------------------------------------------
    def _drive(self, trace: Trace, on_event: Event | None, depth: int = 0) -> Trace:
        st = trace.state
        t0 = time.perf_counter() - st["elapsed_s"]
        while True:
            st["elapsed_s"] = time.perf_counter() - t0
            reason = self._budget_exceeded(st)
            if reason:
                return self._stop(trace, reason[0], reason[1], on_event, depth)
            step = self._model_step(trace, depth, t0)
            trace.steps.append(step)
            if not trace.state.get("pending_calls"):
                _emit(on_event, {"type": "step", "run_id": trace.run_id, "step": step.model_dump()})
            if step.note == "model_error":  # the API itself failed (after one retry)
                return self._stop(trace, "error", step.error, on_event, depth)
            if step.final_answer is not None:
                trip = self._guard(st["agent"]).check_output(step.final_answer, "the final answer")
                if trip:  # withheld: nobody sees the answer
                    return self._stop(trace, "guardrail", trip, on_event, depth)
                trace.answer = step.final_answer
                return self._stop(trace, "final_answer", None, on_event, depth)
            # A step with calls is streamed once its results are in (before any handoff/approval/stop event).
            outcome = self._handle_calls(trace, step, depth, on_event)
            if outcome:
                return self._stop(trace, outcome[0], outcome[1], on_event, depth)
            if depth == 0:
                self._checkpoint(trace)

    def _budget_exceeded(self, st: dict[str, Any]) -> tuple[str, str] | None:
        if st["model_steps"] >= self.cfg.max_steps:
            return "max_steps", f"reached the limit of {self.cfg.max_steps} steps"
        if st["tokens"] >= self.cfg.max_tokens:
            return "budget", f"used {st['tokens']} tokens (budget {self.cfg.max_tokens})"
        if st["elapsed_s"] >= self.cfg.max_seconds:
            return "budget", f"ran {st['elapsed_s']:.1f} s (budget {self.cfg.max_seconds:g} s)"
        return None

    def _model_step(self, trace: Trace, depth: int, t0: float) -> Step:
        st, agent = trace.state, self.agents[trace.state["agent"]]
        begin = time.perf_counter()
        msgs = st["messages"]
        step = Step(index=len(trace.steps), agent=agent.name, depth=depth, input_messages=len(msgs),
                    input_chars=sum(len(m.get("content") or "") for m in msgs))
        params = self._request_params(agent, trace.mode, st["force_final"],
                                      must_call=agent.tool_first and not st["sigs"])
        remaining = max(1.0, self.cfg.max_seconds - (time.perf_counter() - t0))
        st["model_steps"] += 1
        try:
            reply = self._call_model(msgs, params, remaining)
        except ModelError as e:
            step.error, step.valid, step.note = str(e), False, "model_error"
            return step
        step.model_ms = round(reply.duration_ms, 2)
        step.prompt_tokens, step.completion_tokens = reply.prompt_tokens, reply.completion_tokens
        used = reply.prompt_tokens + reply.completion_tokens
        st["tokens"] += used or (step.input_chars + len(reply.content or "")) // 4
        step.output = reply.content if trace.mode == "react" else (reply.content or json.dumps(reply.tool_calls))
        parsed = (P.parse_react(reply.content, step.index) if trace.mode == "react"
                  else P.parse_native(reply.content, reply.tool_calls, step.index))
        step.thought, step.final_answer = parsed.thought, parsed.final_answer
        step.calls = [CallRecord(id=c.id, tool=c.tool, args=c.args) for c in parsed.calls]
        st["pending_calls"] = [[c.id, c.tool, c.args, c.error] for c in parsed.calls]
        if parsed.error:
            cut = reply.finish_reason == "length"
            step.valid = False
            step.error = f"reply cut off at max_tokens ({self.cfg.step_max_tokens}): {parsed.error}" if cut \
                else parsed.error
            msgs.append(P.assistant_message("react", reply.content, []))
            msgs.append({"role": "user", "content": f"Invalid step: {parsed.error}."})
        elif parsed.calls:
            msgs.append(P.assistant_message(trace.mode, reply.content, parsed.calls))
            step.valid = all(c.error is None and self._allowed(agent, c.tool) for c in parsed.calls)
        step.loop_ms = round((time.perf_counter() - begin) * 1000 - step.model_ms, 2)
        return step

    def _call_model(self, msgs: list[dict], params: dict[str, Any], timeout: float):
        try:
            return self.model.complete(msgs, timeout=timeout, **params)
        except ModelError:
            time.sleep(0.5)  # one retry: a replica restart or a dropped connection is usually transient
            return self.model.complete(msgs, timeout=timeout, **params)

    def _request_params(self, agent: AgentSpec, mode: str, force_final: bool,
                        must_call: bool = False) -> dict[str, Any]:
        params: dict[str, Any] = {"max_tokens": self.cfg.step_max_tokens, "temperature": self.cfg.temperature}
        tools = self.tools_for(agent)
        if mode == "native":
            if tools:
                params["tools"] = [t.openai_spec() for t in tools]
                params["tool_choice"] = "none" if force_final else "required" if must_call else "auto"
        elif self.cfg.constrained:
            # ~64 tokens for the JSON around the strings; the rest bounds each string (1 token >= 1 char).
            schema = P.step_schema(tools, allow_parallel=bool(self.cfg.options.get("react_parallel")),
                                   final_only=force_final, max_string=max(16, self.cfg.step_max_tokens - 64),
                                   tools_only=must_call and not force_final)
            params["response_format"] = P.response_format(schema)
        return params

    # --- tools -----------------------------------------------------------------------------------------------
    def tools_for(self, agent: AgentSpec) -> list[Tool]:
        tools = [t for n in agent.tools if (t := self.registry.get(n)) is not None]
        tools += self.registry.provided(agent.mcp_tools, agent.mcp_deny)  # MCP servers' tools (apps/agent/mcp_client.py)
        tools += [handoff_tool(self.agents[n]) for n in agent.handoffs]
        tools += [ask_tool(self.agents[n]) for n in agent.agent_tools]
        return tools

    def _allowed(self, agent: AgentSpec, tool: str) -> bool:
        return any(t.name == tool for t in self.tools_for(agent))

    def _handle_calls(self, trace: Trace, step: Step, depth: int, on_event: Event | None) -> tuple[str, str] | None:
        """Classify each call, run the runnable ones, then either pause, hand off, stop or feed results back."""
        st, agent = trace.state, self.agents[trace.state["agent"]]
        raw = st.pop("pending_calls", [])
        if not raw:
            return None
        calls = [P.Call(cid, tool, args, err) for cid, tool, args, err in raw]
        to_run, pending, handoff = [], [], None
        announce = lambda: _emit(on_event, {"type": "step", "run_id": trace.run_id, "step": step.model_dump()})  # noqa: E731
        for call, rec in zip(calls, step.calls):
            stop = self._classify(trace, agent, call, rec, depth)
            if stop:
                announce()
                return stop
            if rec.status == "pending":
                pending.append(PendingCall(id=call.id, tool=call.tool, args=call.args, agent=agent.name,
                                           step=step.index))
            elif rec.status == "ok" and call.tool.startswith(HANDOFF_PREFIX):
                handoff = handoff or (call, rec)
            elif rec.status == "ok":
                to_run.append((call, rec))
        guard = self._guard(agent.name)
        for call, rec in to_run + [(c, r) for c, r in zip(calls, step.calls) if r.status == "pending"]:
            trip = guard.check_output(json.dumps(call.args, default=str), f"the arguments of {call.tool}")
            if trip:  # before the tool (or a person approving it) sees them
                announce()
                return "guardrail", trip
        begin = time.perf_counter()
        if depth == 0 and to_run:  # a crash while these run: the resumed run knows which were cut short
            st["in_flight"] = [c.id for c, _ in to_run]
            self._checkpoint(trace)
        self._execute(to_run, trace, depth, on_event)
        st.pop("in_flight", None)
        step.tool_ms = round((time.perf_counter() - begin) * 1000, 2)
        for call, rec in to_run:
            trip = guard.check_input(rec.result or "", f"the result of {call.tool}") if rec.status == "ok" else None
            if trip:  # before the model reads it
                rec.result = "[withheld by a guardrail]"
                announce()
                return "guardrail", trip
        for call, rec in to_run:
            if rec.status == "ok":
                st["results"][_sig(call.tool, call.args)] = rec.result
        announce()
        if handoff and not pending:
            return self._handoff(trace, step, *handoff, on_event)
        obs = [(c, r.result if r.status == "ok" else (r.error or ""), r.status != "ok")
               for c, r in zip(calls, step.calls) if r.status != "pending"]
        if pending:
            st["step_obs"] = [{"id": c.id, "tool": c.tool, "text": t, "err": e} for c, t, e in obs]
            st["step_order"] = [c.id for c in calls]
            trace.pending, trace.status = pending, "paused"
            return "needs_approval", ", ".join(f"{p.tool} ({p.id})" for p in pending) + " needs approval"
        note = "You already have this result: give the final answer now." if st["force_final"] else ""
        st["messages"] += P.observation_messages(trace.mode, obs, note, task=trace.task)
        return None

    def _classify(self, trace: Trace, agent: AgentSpec, call: P.Call, rec: CallRecord,
                  depth: int) -> tuple[str, str] | None:
        st = trace.state
        if call.error:
            rec.status, rec.error = "error", call.error
            return None
        if not self._allowed(agent, call.tool):
            names = ", ".join(t.name for t in self.tools_for(agent)) or "none"
            rec.status, rec.error = "error", f"tool {call.tool!r} is not available to agent {agent.name}; " \
                                             f"available: {names}"
            return None
        sig = _sig(call.tool, call.args)
        st["sigs"].append(sig)
        count = st["sigs"].count(sig)
        if count >= self.cfg.repeat_limit or _cycle(st["sigs"]):
            rec.status, rec.error = "skipped", "repeated call"
            return "repeated_call", f"{call.tool} called {count} times with the same arguments" if count > 1 \
                else f"cycle of tool calls ending with {call.tool}"
        if count > 1 and sig in st["results"]:
            rec.status, rec.result = "repeated", st["results"][sig]
            rec.error = "repeated call: this is the earlier result; answer now"
            st["force_final"] = True
            return None
        tool = self.registry.get(call.tool)
        if tool is not None and tool.dangerous:
            rec.dangerous = True
            if call.tool not in st.get("auto_approve", []):
                if depth > 0:
                    rec.status, rec.error = "error", f"{call.tool} needs a person's approval and cannot run " \
                                                     "inside a consulted agent; ask the user instead"
                else:
                    rec.status = "pending"
        return None

    def _execute(self, items: list[tuple[P.Call, CallRecord]], trace: Trace | None = None, depth: int = 0,
                 on_event: Event | None = None) -> None:
        """Run calls concurrently (capped); results land in their records, so call order is kept."""
        def one(item: tuple[P.Call, CallRecord]) -> None:
            call, rec = item
            if call.tool.startswith(ASK_PREFIX) and trace is not None:
                return self._ask(trace, call, rec, depth, on_event)
            res = self.registry.call(call.tool, call.args)
            rec.result, rec.error, rec.attempts = res.output, res.error, res.attempts
            rec.duration_ms, rec.status = round(res.duration_ms, 2), "ok" if res.ok else "error"

        if len(items) <= 1:
            for it in items:
                one(it)
            return
        with ThreadPoolExecutor(max_workers=min(self.cfg.parallel_tool_calls, len(items))) as pool:
            # Each call in a copy of this run's context: tools then reach other apps as the run's owner.
            list(pool.map(lambda it: contextvars.copy_context().run(one, it), items))

    def _ask(self, trace: Trace, call: P.Call, rec: CallRecord, depth: int, on_event: Event | None) -> None:
        """An agent used as a tool: a nested run whose steps join this trace (depth + 1)."""
        target = call.tool[len(ASK_PREFIX):]
        question = (call.args or {}).get("task", "") if isinstance(call.args, dict) else ""
        begin = time.perf_counter()
        sub = Trace(task=question, agent=target, model=trace.model, mode=trace.mode)
        sub.state = {"agent": target, "messages": self._start_messages(target, question, trace.mode), "sigs": [],
                     "results": {}, "tokens": 0, "elapsed_s": 0.0, "model_steps": 0, "force_final": False,
                     "auto_approve": trace.state.get("auto_approve", [])}
        self._drive(sub, on_event, depth + 1)
        for s in sub.steps:
            s.index = len(trace.steps)
            trace.steps.append(s)
        trace.state["tokens"] += sub.state["tokens"]
        rec.duration_ms = round((time.perf_counter() - begin) * 1000, 2)
        if sub.stopped_reason == "final_answer":
            rec.status, rec.result = "ok", sub.answer
        else:
            rec.status, rec.error = "error", f"{target} stopped without an answer ({sub.stopped_reason})"

    def _handoff(self, trace: Trace, step: Step, call: P.Call, rec: CallRecord,
                 on_event: Event | None) -> None:
        st = trace.state
        target = call.tool[len(HANDOFF_PREFIX):]
        reason = call.args.get("reason", "") if isinstance(call.args, dict) else ""
        rec.result = f"handed off to {target}"
        self._record(trace, Step(index=len(trace.steps), agent=st["agent"], kind="handoff",
                                 note=f"{st['agent']} -> {target}" + (f": {reason}" if reason else "")), on_event)
        note = f"\n\n(The {st['agent']} agent handed this task to you" + (f": {reason})" if reason else ")")
        st["agent"], st["force_final"], st["sigs"] = target, False, []
        st["messages"] = self._start_messages(target, trace.task + note, trace.mode)
        return None

    # --- bookkeeping -----------------------------------------------------------------------------------------
    def _start_messages(self, agent: str, task: str, mode: str) -> list[dict[str, Any]]:
        spec = self.agents[agent]
        tools = self.tools_for(spec)
        msgs = [{"role": "system", "content": P.system_prompt(spec.instructions, tools, mode,
                                                              bool(self.cfg.options.get("react_parallel")))}]
        if mode == "react" and self.cfg.options.get("react_example", True):
            msgs += P.example_turns(tools)
        return msgs + [{"role": "user", "content": task}]

    def _record(self, trace: Trace, step: Step, on_event: Event | None) -> None:
        trace.steps.append(step)
        _emit(on_event, {"type": "step", "run_id": trace.run_id, "step": step.model_dump()})

    def _stop(self, trace: Trace, reason: str, detail: str | None, on_event: Event | None, depth: int) -> Trace:
        trace.stopped_reason = reason  # type: ignore[assignment]
        if reason != "needs_approval":
            trace.status, trace.finished_at = "done", time.time()
        if detail:
            self._record(trace, Step(index=len(trace.steps), agent=trace.state["agent"], depth=depth, kind="stop",
                                     note=f"{reason}: {detail}"), on_event)
        steps = [s for s in trace.steps if s.kind == "model"]
        trace.totals = {"model_ms": round(sum(s.model_ms for s in steps), 2),
                        "tool_ms": round(sum(s.tool_ms for s in steps), 2),
                        "loop_ms": round(sum(s.loop_ms for s in steps), 2),
                        "tokens": trace.state["tokens"], "model_steps": len(steps),
                        "elapsed_s": round(trace.state["elapsed_s"], 3)}
        if depth == 0:
            if self.store is not None:
                self.store.save(trace)
                if reason == "final_answer" and trace.state.get("session_id"):
                    sessions.record(self.store, trace.state["session_id"], trace.owner, trace)
            _emit(on_event, {"type": "done", "run_id": trace.run_id, "stopped_reason": reason,
                             "answer": trace.answer, "pending": [p.model_dump() for p in trace.pending]})
        return trace


def _sig(tool: str, args: Any) -> str:
    try:
        return tool + ":" + json.dumps(args, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return tool + ":" + repr(args)


def _cycle(sigs: list[str]) -> bool:
    """A block of 2-3 distinct calls that has just been repeated back to back (A B A B, A B C A B C)."""
    for period in (2, 3):
        if len(sigs) >= 2 * period:
            tail = sigs[-2 * period:]
            if tail[:period] == tail[period:] and len(set(tail[:period])) == period:
                return True
    return False


def _emit(on_event: Event | None, event: dict[str, Any]) -> None:
    if on_event is not None:
        try:
            on_event(event)
        except Exception:  # noqa: BLE001 - a broken listener (closed SSE stream) must not break the run
            pass
