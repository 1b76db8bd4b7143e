"""The tool registry: every tool is declared once (name, description, pydantic argument model) and run here.

The registry is the one place that turns a model's requested call into a result: it validates the arguments
against the tool's model *before* running anything, enforces a per-tool timeout and retry policy, and caps the
size of what comes back. Every failure becomes a `ToolResult` with `error` set, which the loop shows the model as
an observation it can recover from; nothing a tool does can raise out of `ToolRegistry.call`.
"""

from __future__ import annotations

import contextvars
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError


class ToolError(Exception):
    """A tool's expected failure (bad input it could only detect while running, a missing backend...).

    The message goes to the model verbatim, so it should say what to do differently. `retryable` failures are
    retried according to the tool's policy; others are returned at once.
    """

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


@dataclass
class Tool:
    name: str
    description: str
    args_model: type[BaseModel] | None  # None: `schema` describes the arguments (an MCP server's tool)
    fn: Callable[..., Any]
    # Dangerous tools (code execution, anything that writes) never run without a person's approval.
    dangerous: bool = False
    timeout_s: float = 30.0
    retries: int = 0  # extra attempts after a retryable ToolError or an unexpected exception
    retry_backoff_s: float = 0.2
    schema: dict[str, Any] | None = None  # a JSON schema for tools declared elsewhere; `fn` gets the dict
    # Safe to run again with the same arguments (reads, pure functions): a call cut short by a crash is repeated
    # when its run resumes. Anything else is reported as interrupted instead (apps/agent/durable.py).
    idempotent: bool = False

    def json_schema(self) -> dict[str, Any]:
        if self.schema is not None:
            return self.schema
        assert self.args_model is not None
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        schema.setdefault("additionalProperties", False)
        return schema

    def openai_spec(self) -> dict[str, Any]:
        """The OpenAI `tools` entry for native tool calling."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.json_schema()}}


@dataclass
class ToolResult:
    output: str | None = None
    error: str | None = None
    attempts: int = 0
    duration_ms: float = 0.0
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _run_with_timeout(fn: Callable[[], Any], timeout_s: float) -> Any:
    """Run in a daemon thread so a hung tool cannot block the run (or interpreter exit) past its timeout.

    Python cannot kill a thread; a tool that truly hangs keeps its thread until it returns. Tools that can hang
    for real (the sandbox) enforce their own limits in a child process that *can* be killed.
    """
    box: queue.Queue = queue.Queue(maxsize=1)

    def target() -> None:
        try:
            box.put((True, fn()))
        except BaseException as e:  # noqa: BLE001 - everything a tool raises becomes an observation
            box.put((False, e))

    context = contextvars.copy_context()  # the tool acts for the run's owner (apps.client.ACTING_FOR)
    threading.Thread(target=context.run, args=(target,), daemon=True, name="agent-tool").start()
    try:
        ok, value = box.get(timeout=timeout_s)
    except queue.Empty:
        raise TimeoutError(f"tool timed out after {timeout_s:g} s") from None
    if ok:
        return value
    raise value


def _check_schema(name: str, schema: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Validate arguments against a JSON schema (jsonschema, draft 2020-12): ToolError listing what is wrong."""
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(schema).iter_errors(args), key=lambda e: list(e.absolute_path))
    if errors:
        problems = "; ".join(f"{'.'.join(map(str, e.absolute_path)) or 'args'}: {e.message}" for e in errors[:5])
        raise ToolError(f"invalid arguments for {name}: {problems}")
    return args


class ToolRegistry:
    """Named tools. An agent sees a subset (its allow-list); the registry itself never changes during a run."""

    def __init__(self, tools: list[Tool] | None = None, max_output_chars: int = 4000):
        self._tools: dict[str, Tool] = {}
        self.providers: list[Any] = []
        self._lock = threading.Lock()  # providers register while other runs read
        self.max_output_chars = max_output_chars
        for t in tools or []:
            self.register(t)

    def register(self, tool: Tool) -> Tool:
        if not tool.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"tool name {tool.name!r} must be letters, digits, '-' and '_'")
        with self._lock:
            if tool.name in self._tools:
                raise ValueError(f"tool {tool.name!r} is already registered")
            self._tools = {**self._tools, tool.name: tool}  # readers keep the dict they had
        return tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def validate(self, name: str, args: Any) -> BaseModel:
        """Raise ToolError with a readable reason when the call cannot run (unknown tool, bad arguments)."""
        tool = self._tools.get(name)
        if tool is None:
            raise ToolError(f"unknown tool {name!r}; available tools: {', '.join(self.names())}")
        if not isinstance(args, dict):
            raise ToolError(f"arguments for {name} must be a JSON object, got {type(args).__name__}")
        if tool.args_model is None:
            return _check_schema(name, tool.schema or {"type": "object"}, args)
        try:
            return tool.args_model.model_validate(args)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'args'}: {err['msg']}" for err in e.errors())
            raise ToolError(f"invalid arguments for {name}: {problems}") from None

    def add_provider(self, provider: Any) -> None:
        """Tools that appear when first asked for (an MCP server's): `provider.tools(patterns, deny)`."""
        self.providers.append(provider)

    def provided(self, patterns: list[str], deny: list[str]) -> list[Tool]:
        """The providers' tools matching an agent's patterns (connecting to their sources on first use)."""
        return [t for p in self.providers for t in p.tools(patterns, deny)] if patterns else []

    def close(self) -> None:
        for p in self.providers:
            p.close()

    def call(self, name: str, args: Any) -> ToolResult:
        """Validate, run with timeout and retries, cap the output. Never raises."""
        start = time.perf_counter()
        res = ToolResult()
        try:
            parsed = self.validate(name, args)
        except ToolError as e:
            res.error = str(e)
            res.duration_ms = (time.perf_counter() - start) * 1000
            return res
        tool = self._tools[name]
        for attempt in range(1, tool.retries + 2):
            res.attempts = attempt
            try:
                value = _run_with_timeout(lambda: tool.fn(parsed), tool.timeout_s)
                res.output, res.error = _stringify(value), None
                break
            except TimeoutError as e:
                res.error = str(e)  # not retried: a tool that hung once will most likely hang again
                break
            except ToolError as e:
                res.error = str(e)
                if not e.retryable:
                    break
            except Exception as e:  # noqa: BLE001 - a crashing tool is an observation, not a crashed run
                res.error = f"{type(e).__name__}: {e}"
            if attempt <= tool.retries:
                time.sleep(tool.retry_backoff_s * attempt)
        res.duration_ms = (time.perf_counter() - start) * 1000
        if res.output is not None and len(res.output) > self.max_output_chars:
            extra = len(res.output) - self.max_output_chars
            res.output = res.output[: self.max_output_chars] + f"\n[... truncated {extra} more characters]"
            res.truncated = True
        if res.error is not None and len(res.error) > self.max_output_chars:
            res.error = res.error[: self.max_output_chars] + " [...]"
        return res

