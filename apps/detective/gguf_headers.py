"""GGUF metadata and tensor table through the `gguf` package (memory-mapped: only header pages are touched)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apps.detective.headers import DetectiveError, ModelFiles, TensorInfo

# Arrays this long are tokenizer tables: keep their length, not their contents.
_MAX_ARRAY = 64


def _field_value(field: Any) -> Any:
    from gguf import GGUFValueType

    if field.types and field.types[0] == GGUFValueType.ARRAY:
        if len(field.data) > _MAX_ARRAY:
            return {"array_length": len(field.data)}
    return field.contents()


def read_gguf(path: Path) -> ModelFiles:
    size = path.stat().st_size
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise DetectiveError(f"{path.name}: not a GGUF file (bad magic {magic!r})")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path), "r")
    except ValueError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DetectiveError(f"{path.name}: unreadable GGUF ({msg})") from None
    except Exception as e:  # the reader indexes raw bytes: corrupt files surface as many exception types
        raise DetectiveError(f"{path.name}: corrupt or truncated GGUF header ({type(e).__name__})") from None
    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        try:
            meta[key] = _field_value(field)
        except Exception:  # a single undecodable value should not hide the rest
            meta[key] = None
    tensors: dict[str, TensorInfo] = {}
    for t in reader.tensors:
        # GGUF lists dims innermost-first; torch/safetensors order is the reverse.
        shape = tuple(int(d) for d in reversed(list(t.shape)))
        nbytes = int(t.n_bytes)
        if int(t.data_offset) + nbytes > size:
            raise DetectiveError(f"{path.name}: tensor {t.name!r} extends past the end of the file "
                                 "(truncated file or absurd header)")
        tensors[t.name] = TensorInfo(shape, t.tensor_type.name, nbytes, path.name)
    if not tensors:
        raise DetectiveError(f"{path.name}: the GGUF file lists no tensors")
    header_bytes = int(getattr(reader, "data_offset", 0)) or min(size, 1 << 20)
    return ModelFiles(str(path), "gguf", tensors, None, None, gguf_metadata=meta, files=[str(path)],
                      bytes_read=header_bytes, total_file_bytes=size)
