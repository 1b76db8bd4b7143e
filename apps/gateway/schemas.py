"""Request models of the OpenAI-compatible API, as OpenAI publishes them, checked before anything is forwarded.

Every field an engine may receive is declared here with its bounds; an undeclared field is refused with 400
(as OpenAI's own API answers "Unrecognized request argument"), and `engine_request()` forwards only declared,
engine-meaningful fields. Fields OpenAI defines for its own platform (`store`, `metadata`, `service_tier`, `user`)
are accepted and not forwarded. A caller's mistake therefore ends here as a 400 and never reaches, or strikes, a
backend.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

INT64 = 2**63 - 1
NAME = r"^[A-Za-z0-9_-]{1,64}$"
# Accepted for compatibility, never sent to an engine.
PLATFORM_ONLY = {"user", "store", "metadata", "service_tier", "max_completion_tokens"}
MAX_CHOICES = 8  # n: each choice is its own generation (the gateway fans out), so n multiplies the work


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- content parts -------------------------------------------------------------------------------------------
class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageURL(_Strict):
    url: str = Field(..., max_length=20_000_000)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(_Strict):
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(_Strict):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FileRef(_Strict):
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class FilePart(_Strict):
    type: Literal["file"]
    file: FileRef


class RefusalPart(_Strict):
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[Union[TextPart, ImagePart, AudioPart, FilePart], Field(discriminator="type")]
AssistantPart = Annotated[Union[TextPart, RefusalPart], Field(discriminator="type")]


# --- messages, one model per role ----------------------------------------------------------------------------
class FunctionCall(_Strict):
    name: str = Field(..., pattern=NAME)
    arguments: str


class ToolCall(_Strict):
    id: str = Field(..., min_length=1, max_length=256)
    type: Literal["function"]
    function: FunctionCall


class SystemMessage(_Strict):
    role: Literal["system"]
    content: str | Annotated[list[TextPart], Field(min_length=1)]
    name: str | None = Field(None, max_length=256)


class DeveloperMessage(SystemMessage):
    role: Literal["developer"]  # type: ignore[assignment]


class UserMessage(_Strict):
    role: Literal["user"]
    content: str | Annotated[list[UserPart], Field(min_length=1)]
    name: str | None = Field(None, max_length=256)


class AssistantMessage(_Strict):
    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None
    name: str | None = Field(None, max_length=256)
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = Field(None, max_length=128)
    function_call: FunctionCall | None = None

    @model_validator(mode="after")
    def _says_something(self) -> "AssistantMessage":
        if self.content is None and not self.tool_calls and self.function_call is None:
            raise ValueError("an assistant message needs content or tool_calls")
        return self


class ToolMessage(_Strict):
    role: Literal["tool"]
    content: str | Annotated[list[TextPart], Field(min_length=1)]
    tool_call_id: str = Field(..., min_length=1, max_length=256)


class FunctionMessage(_Strict):
    role: Literal["function"]
    content: str | None
    name: str = Field(..., pattern=NAME)


ChatMessage = Annotated[Union[SystemMessage, DeveloperMessage, UserMessage, AssistantMessage, ToolMessage,
                              FunctionMessage], Field(discriminator="role")]


# --- tools and structured output ---------------------------------------------------------------------------
def _check_json_schema(schema: dict[str, Any], where: str) -> dict[str, Any]:
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ValueError(f"{where} is not a valid JSON Schema: {e.message}") from None
    return schema


class FunctionDefinition(_Strict):
    name: str = Field(..., pattern=NAME)
    description: str | None = Field(None, max_length=100_000)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        if v.get("type", "object") != "object":
            raise ValueError("function parameters must be a JSON Schema of type object")
        return _check_json_schema(v, "parameters")


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: str = Field(..., pattern=NAME)


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(_Strict):
    name: str = Field(..., pattern=NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if v is None else _check_json_schema(v, "json_schema.schema")


class TextFormat(_Strict):
    type: Literal["text"]


class JSONObjectFormat(_Strict):
    type: Literal["json_object"]


class JSONSchemaResponseFormat(_Strict):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


ResponseFormat = Annotated[Union[TextFormat, JSONObjectFormat, JSONSchemaResponseFormat], Field(discriminator="type")]


class StreamOptions(_Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


# --- requests ------------------------------------------------------------------------------------------------
Stop = Union[Annotated[str, Field(max_length=512)], Annotated[list[Annotated[str, Field(max_length=512)]],
                                                              Field(max_length=4)]]


class _Sampling(_Strict):
    model: str | None = Field(None, max_length=256, description="Model id from /v1/models; the default when omitted.")
    max_tokens: int | None = Field(None, ge=1, le=1_000_000, description="Tokens to generate; bounded by context.")
    max_completion_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=MAX_CHOICES, description="Choices to generate (whole responses only).")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: Stop | None = None
    seed: int | None = Field(None, ge=-INT64 - 1, le=INT64)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(None, max_length=1024)
    user: str | None = Field(None, max_length=256)
    store: bool | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for k in v or {}:
            if not k.isdigit() or int(k) > 10_000_000:
                raise ValueError(f"logit_bias keys must be token ids (non-negative integers), got {k[:40]!r}")
        return v

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> "_Sampling":
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        if (self.n or 1) > 1 and self.stream:
            raise ValueError("n > 1 is only supported without stream")
        return self

    def budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def engine_request(self, model_id: str, max_tokens: int) -> dict[str, Any]:
        """The request an engine receives: declared, engine-meaningful fields only, JSON-ready."""
        req = self.model_dump(mode="json", exclude_none=True, by_alias=True, exclude=PLATFORM_ONLY)
        req["stream"] = bool(self.stream)
        req["model"], req["max_tokens"] = model_id, max_tokens
        return req


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=4096, description="At least one message.")
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @model_validator(mode="after")
    def _consistent(self) -> "ChatRequest":
        names = [t.function.name for t in self.tools or []]
        if len(names) != len(set(names)):
            raise ValueError("tools: function names must be unique")
        if self.tool_choice is not None and not self.tools and self.tool_choice != "none":
            raise ValueError("tool_choice is only allowed when tools are specified")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise ValueError(f"tool_choice names function {self.tool_choice.function.name!r}, which is not in tools")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        called: set[str] = set()
        for i, m in enumerate(self.messages):
            if isinstance(m, AssistantMessage):
                called |= {c.id for c in m.tool_calls or []}
            elif isinstance(m, ToolMessage) and m.tool_call_id not in called:
                raise ValueError(f"messages.{i}: tool_call_id {m.tool_call_id!r} answers no earlier assistant "
                                 "tool call")
        return self


class CompletionRequest(_Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)] = Field(..., description="Text to continue.")
    echo: bool | None = None
    suffix: str | None = Field(None, max_length=100_000)
    best_of: int | None = Field(None, ge=1, le=1)
    logprobs: int | None = Field(None, ge=0, le=5)


class EmbeddingRequest(_Strict):
    model: str | None = Field(None, max_length=256)
    input: str | Annotated[list[str], Field(min_length=1)] = Field(..., description="A string or a list of strings.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, le=65536)
    user: str | None = Field(None, max_length=256)

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, v: Any) -> Any:
        if isinstance(v, list) and v and not all(isinstance(t, str) for t in v):
            raise ValueError("input must be a string or a list of strings (token arrays are not supported)")
        return v


def validate(model_cls: Any, body: dict[str, Any]) -> Any:
    """`body` as `model_cls`, or a 400 naming the first field that is wrong and why."""
    from pydantic import ValidationError

    from apps.common import APIError

    try:
        return model_cls.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise APIError(400, f"{where}: {first.get('msg')}" if where else first.get("msg", "invalid request"),
                       param=where or None) from None


class RerankDocument(_Strict):
    text: str


class RerankRequest(_Strict):
    """/v1/rerank, as Cohere and Jina define it (what LiteLLM, llama.cpp's server and vLLM accept)."""

    model: str | None = Field(None, max_length=256)
    query: str = Field(..., min_length=1)
    documents: list[str | RerankDocument] = Field(..., min_length=1)
    top_n: int | None = Field(None, ge=1, le=INT64)
    return_documents: bool = False
    user: str | None = Field(None, max_length=256)

    @field_validator("query")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("query is blank")
        return v

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]
