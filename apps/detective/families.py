"""Family references built from what the installed `transformers` defines, and the scoring against them.

`build_references()` instantiates each family's own config class, shrinks it, builds the model with
`AutoModelForCausalLM.from_config` (AutoModel for encoders), saves it, and reads the saved safetensors header back
through the same code path as a user's model: module naming, structural features and config keys all come from
transformers itself. The result is cached in `families.json` (shipped; rebuilt by
`python -m apps.detective.families --rebuild`) so inspecting a model never imports torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from apps.detective.config_view import ConfigView

REFERENCE_FILE = Path(__file__).with_name("families.json")
FAMILIES: dict[str, str] = {
    "llama": "Llama", "mistral": "Mistral", "mixtral": "Mixtral", "qwen2": "Qwen2", "qwen2_moe": "Qwen2-MoE",
    "qwen3": "Qwen3", "qwen3_moe": "Qwen3-MoE", "gemma": "Gemma", "gemma2": "Gemma 2", "gemma3_text": "Gemma 3",
    "phi3": "Phi-3", "deepseek_v2": "DeepSeek-V2", "deepseek_v3": "DeepSeek-V3", "gpt2": "GPT-2",
    "gpt_neox": "GPT-NeoX", "falcon": "Falcon", "opt": "OPT", "olmo2": "OLMo 2", "granite": "Granite",
    "starcoder2": "StarCoder2", "bert": "BERT-like encoder",
}
ENCODERS = {"bert"}
# Structural features and how much each separates families (tied embeddings vary inside a family: weak).
FEATURE_WEIGHTS: dict[str, float] = {
    "attn_layout": 2.0, "qkv_bias": 1.0, "o_bias": 1.0, "qk_norm": 1.5, "mlp": 2.0, "gate_up_fused": 1.0,
    "mlp_bias": 1.0, "moe": 2.0, "shared_experts": 1.5, "router_bias": 1.0, "norm": 1.5, "norms_per_layer": 1.5,
    "learned_pos": 1.5, "encoder": 2.0, "tied": 0.5, "qk_norm_scope": 1.0, "norm_placement": 1.0,
}
_SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=128, moe_intermediate_size=32, num_experts=4, num_local_experts=4,
              n_routed_experts=4, num_experts_per_tok=2, n_embd=64, n_layer=2, n_head=4, n_positions=64,
              ffn_dim=128, ffn_hidden_size=128, word_embed_proj_dim=64, kv_lora_rank=16, q_lora_rank=24,
              qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16, head_dim=16, first_k_dense_replace=1,
              shared_expert_intermediate_size=32, n_group=1, topk_group=1, max_position_embeddings=64,
              pad_token_id=0, bos_token_id=1, eos_token_id=2)


def tiny_config(model_type: str, **overrides: Any):  # type: ignore[no-untyped-def]
    """The family's own default config, shrunk to a few thousand parameters (used by tests too)."""
    from transformers import AutoConfig

    base = AutoConfig.for_model(model_type)
    # Only keys this config class has, and not computed properties (Falcon's head_dim): passing them to the
    # constructor lets it derive dependent fields (layer_types and friends) consistently.
    kwargs = {k: v for k, v in {**_SMALL, **overrides}.items()
              if hasattr(base, k) and not isinstance(getattr(type(base), k, None), property)}
    cfg = AutoConfig.for_model(model_type, **kwargs)
    return cfg


def build_model(model_type: str, **overrides: Any):  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = tiny_config(model_type, **overrides)
    auto = AutoModel if model_type in ENCODERS else AutoModelForCausalLM
    return auto.from_config(cfg)


def _reference(model_type: str, workdir: Path) -> dict[str, Any]:
    from transformers import AutoConfig, PretrainedConfig

    from apps.detective.analysis import analyze
    from apps.detective.headers import read_model
    from apps.detective.roles import pattern

    out = workdir / model_type
    build_model(model_type).save_pretrained(out)
    mf = read_model(out)
    mf.config = None  # features from weights alone, like a model whose config is missing
    facts, _, _ = analyze(mf)
    generic = set(PretrainedConfig().to_dict())
    cfg = AutoConfig.for_model(model_type)
    return {
        "model_type": model_type, "name": FAMILIES[model_type], "config_class": type(cfg).__name__,
        "config_keys": sorted(set(cfg.to_dict()) - generic),
        "features": facts.features, "patterns": sorted({pattern(n) for n in mf.tensors}),
        "defaults": {k: v for k, v in cfg.to_dict().items() if k in ("hidden_act", "hidden_activation",
                     "tie_word_embeddings", "sliding_window", "rope_theta", "alibi", "position_embedding_type")},
    }


def build_references(families: list[str] | None = None) -> dict[str, Any]:
    import tempfile

    import transformers

    refs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model_type in families or list(FAMILIES):
            refs[model_type] = _reference(model_type, Path(tmp))
    return {"transformers_version": transformers.__version__, "families": refs}


_CACHE: dict[str, Any] = {}


def load_references() -> dict[str, Any]:
    if "refs" not in _CACHE:
        _CACHE["refs"] = json.loads(REFERENCE_FILE.read_text())
    return _CACHE["refs"]


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def _feature_score(model: dict[str, Any], ref: dict[str, Any]) -> tuple[float, list[str]]:
    got = total = 0.0
    diffs = []
    for key, weight in FEATURE_WEIGHTS.items():
        a, b = model.get(key), ref.get(key)
        if a is None or b is None:
            continue
        total += weight
        if a == b:
            got += weight
        else:
            diffs.append(f"{key}: this model {a}, reference {b}")
    return (got / total if total else 0.0), diffs


def score_families(features: dict[str, Any], patterns: set[str] | None, cv: ConfigView,
                   claim: str | None) -> list[dict[str, Any]]:
    """Rank every reference family: features (always), tensor naming (safetensors), config keys (if a config)."""

    refs = load_references()["families"]
    keys = cv.keys() if cv.cfg else set()
    out = []
    for order, (model_type, ref) in enumerate(refs.items()):
        parts: list[tuple[float, float]] = []
        fscore, diffs = _feature_score(features, ref["features"])
        parts.append((fscore, 0.45))
        ref_patterns = set(ref["patterns"])
        if patterns:
            nscore = _jaccard(patterns, ref_patterns)
            parts.append((nscore, 0.35))
            only_model = sorted(patterns - ref_patterns)[:2]
            only_ref = sorted(ref_patterns - patterns)[:2]
            diffs += [f"tensor {p} not in {model_type}" for p in only_model]
            diffs += [f"{model_type} has {p}" for p in only_ref]
        if keys:
            ref_keys = set(ref["config_keys"])
            parts.append((_jaccard(keys & (ref_keys | keys), ref_keys), 0.2))
            diffs += [f"config key {k!r} (in {model_type}) missing" for k in sorted(ref_keys - keys)[:2]]
        base = sum(s * w for s, w in parts) / sum(w for _, w in parts)
        # A declared type counts only when the structure agrees with it: a mislabelled file must not win.
        declared = claim == model_type and fscore >= 0.8
        final = 0.6 * base + 0.4 * declared if claim else base
        out.append({"family": model_type, "name": ref["name"], "score": round(final, 4),
                    "feature_score": round(fscore, 4), "differences": diffs[:6], "_order": order})
    out.sort(key=lambda c: (-c["score"], c["_order"]))
    for c in out:
        c.pop("_order")
    return out


def main(argv: list[str]) -> int:
    if "--rebuild" not in argv:
        print("usage: python -m apps.detective.families --rebuild", file=sys.stderr)
        return 2
    refs = build_references()
    REFERENCE_FILE.write_text(json.dumps(refs, indent=1, sort_keys=False) + "\n")
    print(f"wrote {len(refs['families'])} families to {REFERENCE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
