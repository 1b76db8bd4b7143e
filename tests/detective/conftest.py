"""Tiny random-initialised models of every reference family, built by transformers in the test run itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

# Deliberately not the reference sizes (families.json uses hidden 64 / 4 heads): the detective must not rely on them.
SIZES = dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=2, head_dim=16, n_embd=96, n_head=6,
             intermediate_size=160, word_embed_proj_dim=96, num_hidden_layers=3, n_layer=3, vocab_size=160)


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """zoo(family, hide=None|"strip"|"remove", **overrides) -> folder holding a saved tiny model."""
    root = tmp_path_factory.mktemp("zoo")
    built: dict[tuple, Path] = {}

    def make(family: str, hide: str | None = None, shard_bytes: int | None = None, **overrides) -> Path:
        key = (family, hide, shard_bytes, tuple(sorted(overrides.items())))
        if key in built:
            return built[key]
        from apps.detective.families import build_model

        out = root / f"{family}-{hide}-{len(built)}"
        model = build_model(family, **{**SIZES, **overrides})
        if shard_bytes:
            model.save_pretrained(out, max_shard_size=shard_bytes)
        else:
            model.save_pretrained(out)
        cfg = out / "config.json"
        if hide == "strip":  # identity hidden: no model_type, no architectures
            data = json.loads(cfg.read_text())
            data.pop("model_type", None)
            data.pop("architectures", None)
            cfg.write_text(json.dumps(data))
        elif hide == "remove":
            cfg.unlink()
            (out / "generation_config.json").unlink(missing_ok=True)
        built[key] = out
        return out

    yield make
    shutil.rmtree(root, ignore_errors=True)
