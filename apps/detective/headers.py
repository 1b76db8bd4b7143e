"""Read a model's *headers* only: safetensors JSON headers (+ the shard index) and GGUF metadata/tensor tables.

Nothing here touches weight bytes. Every read goes through `_Budget`, which counts the bytes read so callers
(tests, the benchmark) can prove that a 100 GB model costs only its headers.
"""

from __future__ import annotations

import functools
import gc
import math
import os
import struct
from pathlib import Path
from typing import Any

from apps.detective.model_files import MAX_ELEMENTS, DetectiveError, ModelFiles, TensorInfo  # noqa: F401 - re-exported

# A safetensors header above this is not a header (the largest real ones, 10^5 tensors, are ~15 MB).
MAX_HEADER_BYTES = 100 * 2**20
MAX_JSON_BYTES = 50 * 2**20  # config.json / index files
ST_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                  "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
                  "F4": 0.5, "F6_E2M3": 0.75, "F6_E3M2": 0.75, "C64": 8}


try:  # orjson parses a 20 MB header ~3x faster than json; both give the same dicts
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson ships with gradio, but keep working without it
    from json import loads as _loads


class _Budget:
    def __init__(self) -> None:
        self.bytes = 0

    def read(self, f, n: int) -> bytes:  # type: ignore[no-untyped-def]
        data = f.read(n)
        self.bytes += len(data)
        return data


def _read_json(path: Path, budget: _Budget, what: str) -> dict[str, Any]:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise DetectiveError(f"{path.name}: {what} of {size} bytes is too large to be a real {what}")
    with open(path, "rb") as f:
        raw = budget.read(f, size)
    try:
        data = _loads(raw)
    except ValueError as e:
        reason = str(e).splitlines()[0][:120] if str(e) else "parse error"
        raise DetectiveError(f"{path.name}: {what} is not valid JSON ({reason})") from None
    if not isinstance(data, dict):
        raise DetectiveError(f"{path.name}: {what} must be a JSON object")
    return data


def read_safetensors_header(path: Path, budget: _Budget) -> dict[str, TensorInfo]:
    """Parse and validate one file's header; raise DetectiveError on anything a real writer would not produce."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = budget.read(f, 8)
        if len(head) < 8:
            raise DetectiveError(f"{path.name}: file is {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > MAX_HEADER_BYTES or n > size - 8:
            raise DetectiveError(f"{path.name}: not a safetensors file (header claims {n} bytes in a {size}-byte file)")
        raw = budget.read(f, n)
    if len(raw) < n:
        raise DetectiveError(f"{path.name}: truncated safetensors header")
    if raw[:1] != b"{":
        raise DetectiveError(f"{path.name}: not a safetensors file (header is not a JSON object)")
    try:
        header = _loads(raw)
    except ValueError:  # JSONDecodeError, orjson.JSONDecodeError and UnicodeDecodeError are all ValueErrors
        raise DetectiveError(f"{path.name}: corrupt safetensors header (invalid JSON)") from None
    if not isinstance(header, dict):
        raise DetectiveError(f"{path.name}: corrupt safetensors header (not an object)")
    data_bytes = size - 8 - n
    fname = path.name
    out: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        out[name] = _validate_entry(fname, name, entry, data_bytes)
    return out


def _validate_entry(fname: str, name: str, entry: Any, data_bytes: int) -> TensorInfo:
    # Hot loop for 10^5-tensor headers: plain checks, no helper calls on the happy path.
    try:
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        begin, end = offsets
    except (TypeError, KeyError, ValueError):
        raise DetectiveError(f"{fname}: corrupt header entry for tensor {name!r}") from None
    itemsize = ST_DTYPE_BYTES.get(dtype)
    if itemsize is None:
        raise DetectiveError(f"{fname}: tensor {name!r} has unknown dtype {dtype!r}")
    try:  # math.prod and min run in C: 10^5 shapes cost milliseconds, and floats/strings/negatives still fail
        numel = math.prod(shape)
        ok = type(shape) is list and type(numel) is int and (not shape or min(shape) >= 0)
    except TypeError:
        ok = False
    if not ok:
        raise DetectiveError(f"{fname}: tensor {name!r} has an invalid shape {shape!r}")
    if numel > MAX_ELEMENTS:
        raise DetectiveError(f"{fname}: tensor {name!r} claims an absurd shape {shape} ({numel:.3g} elements)")
    if type(begin) is not int or type(end) is not int or not 0 <= begin <= end:
        raise DetectiveError(f"{fname}: tensor {name!r} has invalid data offsets {[begin, end]}")
    nbytes = numel * itemsize if type(itemsize) is int else math.ceil(numel * itemsize)
    if end - begin != nbytes:
        raise DetectiveError(f"{fname}: tensor {name!r} claims {end - begin} bytes but {dtype}{shape} needs {nbytes}")
    if end > data_bytes:
        raise DetectiveError(f"{fname}: tensor {name!r} ends at byte {end}, past the file's {data_bytes} data bytes "
                             "(truncated file or absurd header)")
    return TensorInfo(tuple(shape), dtype, nbytes, fname, numel)


def _load_config(folder: Path, budget: _Budget) -> tuple[dict[str, Any] | None, str | None]:
    cfg = folder / "config.json"
    if cfg.is_file():
        return _read_json(cfg, budget, "config.json"), str(cfg)
    return None, None


def read_safetensors_model(path: Path) -> ModelFiles:
    """A folder (single file or sharded, with or without config.json) or one .safetensors file."""
    budget = _Budget()
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        index = sorted(folder.glob("*.safetensors.index.json"))
        if index:
            shards = _shards_from_index(index[0], budget)
        else:
            shards = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    else:
        shards = [path]
    tensors: dict[str, TensorInfo] = {}
    for shard in shards:
        for name, info in read_safetensors_header(shard, budget).items():
            if name in tensors:
                raise DetectiveError(f"tensor {name!r} appears in both {tensors[name].file} and {shard.name}")
            tensors[name] = info
    if not tensors:
        raise DetectiveError(f"{path}: the safetensors header(s) hold no tensors")
    config, source = _load_config(folder, budget)
    return ModelFiles(str(path), "safetensors", tensors, config, source, files=[str(s) for s in shards],
                      bytes_read=budget.bytes, total_file_bytes=sum(s.stat().st_size for s in shards))


def _shards_from_index(index: Path, budget: _Budget) -> list[Path]:
    data = _read_json(index, budget, "shard index")
    wmap = data.get("weight_map")
    if not isinstance(wmap, dict) or not wmap:
        raise DetectiveError(f"{index.name}: shard index has no weight_map")
    names = sorted({str(v) for v in wmap.values()})
    shards = []
    for name in names:
        p = (index.parent / name).resolve()
        if p.parent != index.parent.resolve():
            raise DetectiveError(f"{index.name}: shard {name!r} points outside the model folder")
        if not p.is_file():
            raise DetectiveError(f"{index.name}: shard {name!r} listed in the index is missing")
        shards.append(p)
    return shards


def find_model_files(path: Path) -> tuple[str, Path]:
    """Which reader applies: ("safetensors"|"gguf", path). One-line errors for everything else."""
    if not path.exists():
        raise DetectiveError(f"{path}: no such file or directory")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".gguf":
            return "gguf", path
        if suffix == ".safetensors":
            return "safetensors", path
        if path.name.endswith(".safetensors.index.json"):
            return "safetensors", path.parent
        if path.name == "config.json":
            return find_model_files(path.parent)
        raise DetectiveError(f"{path.name}: not a model file (expected .safetensors, .gguf or a model folder)")
    if any(path.glob("*.safetensors")) or any(path.glob("*.safetensors.index.json")):
        return "safetensors", path
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return "gguf", ggufs[0]
    if len(ggufs) > 1:
        raise DetectiveError(f"{path}: holds {len(ggufs)} GGUF files; name one of them")
    if any(path.glob("*.bin")) or any(path.glob("*.pt")) or any(path.glob("*.pth")):
        raise DetectiveError(f"{path}: only pickle weights (.bin/.pt) here; they can't be read without unpickling "
                             "(convert to safetensors first)")
    raise DetectiveError(f"{path}: no model files (.safetensors or .gguf) in this directory")


def no_gc(fn):  # type: ignore[no-untyped-def]
    """Run without the cyclic GC: a 10^5-tensor header allocates ~10^6 acyclic objects, and in a process that has
    imported torch or gradio each full collection rescans millions of live objects (it doubled inspection time)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return wrapper


@no_gc
def read_model(path: str | os.PathLike[str]) -> ModelFiles:
    kind, p = find_model_files(Path(path).expanduser())
    if kind == "gguf":
        from apps.detective.gguf_headers import read_gguf

        return read_gguf(p)
    return read_safetensors_model(p)
