"""What a model's headers say, as the header readers (safetensors in headers.py, GGUF in gguf_headers.py) return
it, and the error they raise for a bad input."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_ELEMENTS = 10**13  # one tensor with more elements than this is an absurd claim (~40 TB at fp32)


class DetectiveError(ValueError):
    """A bad input: the message is one line meant for the user (CLI error, HTTP 4xx)."""


@dataclass(slots=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    file: str = ""
    numel: int = 1


@dataclass
class ModelFiles:
    """What the headers say: tensors by name, the config (if any), and the bookkeeping that proves how."""

    path: str
    format: str  # "safetensors" | "gguf"
    tensors: dict[str, TensorInfo]
    config: dict[str, Any] | None = None
    config_source: str | None = None
    gguf_metadata: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    bytes_read: int = 0
    total_file_bytes: int = 0
