"""The architecture analysis: every fact module run over one model's tensors, in order (facts.py holds the
types they share, so the fact modules import it and nothing imports back)."""

from __future__ import annotations

from apps.detective import facts_attention, facts_mlp, facts_structure
from apps.detective.config_view import ConfigView
from apps.detective.facts import Facts, Tensors
from apps.detective.headers import ModelFiles
from apps.detective.roles import classify, normalized, pattern_of


def analyze(mf: ModelFiles) -> tuple[Facts, Tensors, ConfigView]:
    items, norms = [], set()
    for name, info in mf.tensors.items():
        norm = normalized(name)
        norms.add(norm)
        items.append((name, info, classify(name, len(info.shape), norm)))
    t = Tensors(items)
    t.patterns = {pattern_of(n) for n in norms}
    source = "config.json" if mf.format == "safetensors" else "gguf"
    cv = ConfigView(mf.config, mf.gguf_metadata, source=source)
    f = Facts()
    facts_structure.embedding_and_layers(f, t, cv)
    facts_attention.attention(f, t, cv)
    facts_mlp.mlp(f, t, cv)
    facts_structure.norms(f, t)
    facts_structure.position(f, t, cv)
    facts_structure.tied_and_window(f, t, cv)
    facts_structure.inventory(f, t)
    facts_attention.kv_cache(f, t)
    return f, t, cv
