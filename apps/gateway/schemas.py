"""Request models for the OpenAI-compatible API. Known fields are checked; unknown ones pass through to engines
(tools, response_format, seed, ...), as OpenAI's own API accepts many more than any one engine uses."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _parts(cls, v: Any) -> Any:
        if isinstance(v, list) and not all(isinstance(p, dict) and "type" in p for p in v):
            raise ValueError("content parts must be objects with a `type`")
        return v


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = Field(None, description="Model id from /v1/models; the configured default when omitted.")
    max_tokens: int | None = Field(None, ge=1, description="Tokens to generate; bounded by the model's context.")
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=1, description="Only n=1 is supported.")
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None

    def budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1, description="At least one message.")


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(..., description="Text to continue.")

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, v: Any) -> Any:
        if isinstance(v, list) and (len(v) != 1 or not isinstance(v[0], str)):
            raise ValueError("only a single prompt string is supported")
        return v


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    input: str | list[str] = Field(..., description="A string or a list of strings.")
    encoding_format: Literal["float", "base64"] = "float"

    @field_validator("input")
    @classmethod
    def _texts(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("input must not be empty")
            if not all(isinstance(t, str) for t in v):
                raise ValueError("input must be a string or a list of strings (token arrays are not supported)")
        return v
