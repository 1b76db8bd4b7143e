"""Name -> role: what one tensor is (query projection, expert up-projection, a norm...), for HF and GGUF naming.

Both Hugging Face module paths (`model.layers.3.self_attn.q_proj.weight`) and llama.cpp's canonical GGUF names
(`blk.3.attn_q.weight`) map onto the same roles, so every later step is naming-agnostic.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|blk|block)\.(\d+)\.")
_LAYER_NORM = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|blk|block)\.#\.")
_DIGITS = re.compile(r"\.\d+(?=\.|$)")  # no look-behind: 10x faster on 10^5-tensor headers
# Outer wrappers that only depend on which head class saved the model (CausalLM vs base model).
WRAPPERS = {"model", "transformer", "bert", "gpt_neox", "base_model", "language_model", "roberta", "backbone"}

_ATTN_PARENTS = {"self_attn", "attention", "attn", "self_attention", "self", "mixer"}
_LEAF_ROLES = {
    # attention
    "q_proj": "q", "query": "q", "wq": "q", "attn_q": "q",
    "k_proj": "k", "key": "k", "wk": "k", "attn_k": "k",
    "v_proj": "v", "value": "v", "wv": "v", "attn_v": "v",
    "qkv_proj": "qkv", "c_attn": "qkv", "query_key_value": "qkv", "wqkv": "qkv", "attn_qkv": "qkv",
    "o_proj": "o", "out_proj": "o", "wo": "o", "attn_output": "o",
    "q_a_proj": "q_a", "attn_q_a": "q_a", "q_b_proj": "q_b", "attn_q_b": "q_b",
    "kv_a_proj_with_mqa": "kv_a", "attn_kv_a_mqa": "kv_a", "kv_b_proj": "kv_b", "attn_kv_b": "kv_b",
    "attn_k_b": "kv_b", "attn_v_b": "kv_b",
    "q_norm": "q_norm", "q_layernorm": "q_norm", "attn_q_norm": "q_norm",
    "k_norm": "k_norm", "k_layernorm": "k_norm", "attn_k_norm": "k_norm",
    "q_a_layernorm": "mla_norm", "kv_a_layernorm": "mla_norm", "attn_q_a_norm": "mla_norm",
    "attn_kv_a_norm": "mla_norm",
    # mlp
    "gate_proj": "gate", "w1": "gate", "ffn_gate": "gate", "ffn_gate_exps": "gate", "ffn_gate_shexp": "gate",
    "up_proj": "up", "w3": "up", "ffn_up": "up", "ffn_up_exps": "up", "ffn_up_shexp": "up", "fc1": "up",
    "c_fc": "up", "dense_h_to_4h": "up",
    "down_proj": "down", "w2": "down", "ffn_down": "down", "ffn_down_exps": "down", "ffn_down_shexp": "down",
    "fc2": "down", "dense_4h_to_h": "down",
    "gate_up_proj": "gate_up", "ffn_gate_up": "gate_up",
    "ffn_gate_inp": "router", "router": "router", "ffn_gate_inp_shexp": "shared_gate",
    "shared_expert_gate": "shared_gate", "e_score_correction_bias": "router", "exp_probs_b": "router",
}
_TOP_ROLES = {
    "embed_tokens": "embed", "wte": "embed", "word_embeddings": "embed", "embed_in": "embed",
    "tok_embeddings": "embed", "token_embd": "embed",
    "wpe": "pos_embed", "embed_positions": "pos_embed", "position_embeddings": "pos_embed",
    "position_embd": "pos_embed", "token_type_embeddings": "token_type", "token_types": "token_type",
    "lm_head": "lm_head", "embed_out": "lm_head", "output": "lm_head",
}
COMPONENT = {
    "embed": "embedding", "token_type": "embedding", "pos_embed": "position", "lm_head": "lm_head",
    "q": "attention", "k": "attention", "v": "attention", "qkv": "attention", "o": "attention",
    "q_a": "attention", "q_b": "attention", "kv_a": "attention", "kv_b": "attention", "q_norm": "attention",
    "k_norm": "attention", "mla_norm": "attention", "gate": "mlp", "up": "mlp", "down": "mlp", "gate_up": "mlp",
    "router": "router", "shared_gate": "router", "norm": "norm", "rope_buffer": "other", "other": "other",
}


class Role(NamedTuple):
    layer: int | None
    role: str  # see COMPONENT keys
    component: str  # embedding / position / attention / mlp / experts / shared_experts / router / norm / lm_head / other
    bias: bool
    path: str  # module path inside the layer (or the whole name), digits as '#', without .weight/.bias
    fused_experts: bool = False  # one 3-D tensor holding every expert


def normalized(name: str) -> str:
    """Every index replaced by '#': the key under which names share a classification."""
    return _DIGITS.sub(".#", name)


@lru_cache(maxsize=65536)
def pattern_of(norm: str) -> str:
    parts = norm.split(".")
    while len(parts) > 2 and parts[0] in WRAPPERS:
        parts = parts[1:]
    return ".".join(parts)


def pattern(name: str) -> str:
    """Naming signature: wrappers stripped, every index replaced by '#' (`layers.#.self_attn.q_proj.weight`)."""
    return pattern_of(normalized(name))


def classify(name: str, ndim: int, norm: str | None = None) -> Role:
    """10^5-tensor headers: the regex work is per distinct normalised name (cached), not per tensor."""
    m = _LAYER.search(name)
    return _role(int(m.group(1)) if m else None, norm or normalized(name), ndim)


@lru_cache(maxsize=65536)
def _role(layer: int | None, norm: str, ndim: int) -> Role:
    return Role(layer, *_classify_norm(norm, ndim))


@lru_cache(maxsize=65536)
def _classify_norm(norm: str, ndim: int) -> tuple[str, str, bool, str, bool]:
    base, _, suffix = norm.rpartition(".")
    bias = suffix == "bias"
    if suffix not in ("weight", "bias"):
        base = norm  # fused expert parameters and buffers have no .weight suffix
    m = _LAYER_NORM.search(norm)
    layer = 0 if m else None
    inner = base[m.end():] if m else base
    parts = inner.split(".")
    leaf = parts[-1].lower()
    lowered = [p.lower() for p in parts]
    is_shared = any("shared_expert" in p or p.endswith("_shexp") for p in lowered)
    is_expert = not is_shared and (any(p == "experts" for p in lowered) or leaf.endswith("_exps"))
    fused = is_expert and ndim == 3
    role = _leaf_role(leaf, lowered, layer, suffix)
    component = COMPONENT.get(role, "other")
    if component == "mlp" and is_expert:
        component = "experts"
    elif component == "mlp" and is_shared:
        component = "shared_experts"
    return role, component, bias, inner, fused


def _leaf_role(leaf: str, parts: list[str], layer: int | None, suffix: str) -> str:
    parent = parts[-2] if len(parts) > 1 else ""
    if leaf == "inv_freq":
        return "rope_buffer"
    if layer is None:
        if leaf in _TOP_ROLES and not (leaf == "output" and suffix not in ("weight", "bias")):
            return _TOP_ROLES[leaf]
        if "decoder" == leaf and "predictions" in parts:
            return "lm_head"
        if "norm" in leaf or leaf.startswith("ln") or leaf == "layernorm":
            return "norm"
        return "other"
    if leaf in ("gate", "gate_proj") and parent in ("mlp", "block_sparse_moe", "moe", "feed_forward") and leaf == "gate":
        return "router"
    if leaf in _LEAF_ROLES:
        return _LEAF_ROLES[leaf]
    if leaf in ("dense", "c_proj"):
        # BERT: attention.output.dense / intermediate.dense / output.dense; GPT-2: attn.c_proj vs mlp.c_proj
        if parent in _ATTN_PARENTS or (parent == "output" and "attention" in parts):
            return "o"
        if parent == "intermediate":
            return "up"
        return "down"
    if "norm" in leaf or leaf.startswith("ln_") or leaf == "layernorm":
        return "norm"
    return "other"
