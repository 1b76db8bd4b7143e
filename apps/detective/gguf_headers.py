"""GGUF metadata and tensor table, parsed straight from the header with the `gguf` package's type tables.

`gguf.GGUFReader` builds numpy views of every metadata value, which for a 262k-token vocabulary takes seconds;
this walks the same layout (GGUF v2/v3: magic, version, counts, key/value pairs, tensor infos) once, skipping
array payloads by size, and stops where the tensor data starts. Every length is bounds-checked against the file.
"""

from __future__ import annotations

import math
import mmap
import struct
from pathlib import Path
from typing import Any

from apps.detective.model_files import MAX_ELEMENTS, DetectiveError, ModelFiles, TensorInfo

SUPPORTED_VERSIONS = (2, 3)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_MAX_KEEP = 64  # arrays longer than this (tokenizer tables) are summarised by length


class _Cursor:
    def __init__(self, buf: Any, name: str):
        self.buf, self.pos, self.name, self.size = buf, 0, name, len(buf)

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise DetectiveError(f"{self.name}: truncated or corrupt GGUF header (needs byte {self.pos + n} of "
                                 f"{self.size})")

    def unpack(self, fmt: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        self.need(n)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            return self.array()
        raise DetectiveError(f"{self.name}: corrupt GGUF header (unknown value type {vtype})")

    def array(self) -> Any:
        itype, n = self.unpack("<I"), self.unpack("<Q")
        if n > self.size:
            raise DetectiveError(f"{self.name}: truncated or corrupt GGUF header (an array claims {n} items in a "
                                 f"{self.size}-byte file)")
        if n <= _MAX_KEEP:
            return [self.value(itype) for _ in range(n)]
        if itype in _SCALARS:  # fixed-size items: skip in one step
            step = struct.calcsize(_SCALARS[itype]) * n
            self.need(step)
            self.pos += step
        else:
            for _ in range(n):
                self.value(itype)
        return {"array_length": n}


def _tensor_table(cur: _Cursor, count: int) -> list[tuple[str, tuple[int, ...], int, int]]:
    out = []
    for _ in range(count):
        name = cur.string()
        ndim = cur.unpack("<I")
        if ndim > 8:
            raise DetectiveError(f"{cur.name}: tensor {name!r} claims {ndim} dimensions")
        dims = tuple(cur.unpack("<Q") for _ in range(ndim))
        out.append((name, dims, cur.unpack("<I"), cur.unpack("<Q")))
    return out


def _nbytes(name: str, dims: tuple[int, ...], gtype: int, fname: str) -> tuple[str, int]:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        qtype = GGMLQuantizationType(gtype)
        block, size = GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise DetectiveError(f"{fname}: tensor {name!r} has unknown GGML type {gtype}") from None
    numel = math.prod(dims) if dims else 1
    if numel > MAX_ELEMENTS:
        raise DetectiveError(f"{fname}: tensor {name!r} claims an absurd shape {list(dims)}")
    return qtype.name, numel // block * size


def parse_gguf(buf: Any, fname: str) -> tuple[dict[str, Any], dict[str, TensorInfo], int]:
    cur = _Cursor(buf, fname)
    cur.need(4)
    if bytes(buf[:4]) != b"GGUF":
        raise DetectiveError(f"{fname}: not a GGUF file (bad magic {bytes(buf[:4])!r})")
    cur.pos = 4
    version = cur.unpack("<I")
    if version not in SUPPORTED_VERSIONS:
        raise DetectiveError(f"{fname}: GGUF version {version} is not supported (known: 2, 3)")
    n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
    if n_tensors > 10**7 or n_kv > 10**6:
        raise DetectiveError(f"{fname}: GGUF header claims absurd counts ({n_tensors} tensors, {n_kv} keys)")
    meta: dict[str, Any] = {"GGUF.version": version}
    for _ in range(n_kv):
        key = cur.string()
        meta[key] = cur.value(cur.unpack("<I"))
    table = _tensor_table(cur, n_tensors)
    align = meta.get("general.alignment", 32)
    align = align if isinstance(align, int) and align > 0 else 32
    data_start = (cur.pos + align - 1) // align * align
    tensors: dict[str, TensorInfo] = {}
    for name, dims, gtype, offset in table:
        dtype, nbytes = _nbytes(name, dims, gtype, fname)
        if data_start + offset + nbytes > len(buf):
            raise DetectiveError(f"{fname}: tensor {name!r} extends past the end of the file (truncated file or "
                                 "absurd header)")
        # GGUF lists dims innermost-first; torch/safetensors order is the reverse.
        tensors[name] = TensorInfo(tuple(reversed(dims)), dtype, nbytes, fname, math.prod(dims) if dims else 1)
    return meta, tensors, cur.pos


def read_gguf(path: Path) -> ModelFiles:
    size = path.stat().st_size
    if size < 24:
        raise DetectiveError(f"{path.name}: file is {size} bytes, too short for a GGUF header")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        meta, tensors, header_end = parse_gguf(mm, path.name)
    if not tensors:
        raise DetectiveError(f"{path.name}: the GGUF file lists no tensors")
    return ModelFiles(str(path), "gguf", tensors, None, None, gguf_metadata=meta, files=[str(path)],
                      bytes_read=header_end, total_file_bytes=size)
