"""The response objects of OpenAI's API reference (openai-openapi `openapi.yaml`), reduced to what the spec marks
*required* with its types and nullability: a response missing one is what typed clients reject. Extra fields are
allowed (the spec allows them; Conductor adds none that clash)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Obj(BaseModel):
    model_config = ConfigDict(extra="allow")


class FunctionCall(_Obj):
    name: str
    arguments: str


class ToolCall(_Obj):
    id: str
    type: Literal["function"]
    function: FunctionCall


class ResponseMessage(_Obj):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(_Obj):
    index: int
    message: ResponseMessage
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter", "function_call"]
    logprobs: dict[str, Any] | None


class CompletionUsage(_Obj):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(_Obj):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage | None = None


class ToolCallDeltaFunction(_Obj):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(_Obj):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ToolCallDeltaFunction | None = None


class Delta(_Obj):
    role: Literal["assistant", "system", "user", "tool", "developer"] | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(_Obj):
    index: int
    delta: Delta
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter", "function_call"] | None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(_Obj):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None


class CompletionChoice(_Obj):
    index: int
    text: str
    finish_reason: Literal["stop", "length", "content_filter"] | None
    logprobs: dict[str, Any] | None


class Completion(_Obj):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]


class Embedding(_Obj):
    index: int
    object: Literal["embedding"]
    embedding: list[float] | str


class EmbeddingUsage(_Obj):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(_Obj):
    object: Literal["list"]
    model: str
    data: list[Embedding]
    usage: EmbeddingUsage


class Model(_Obj):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(_Obj):
    object: Literal["list"]
    data: list[Model]


class ErrorBody(_Obj):
    message: str
    type: str
    param: str | None
    code: str | None


class Error(_Obj):
    error: ErrorBody
