"""One lookup over the ways a model can describe itself: HF config.json keys (many spellings) or GGUF metadata.

`get(fact)` returns `(value, evidence)`; evidence names the exact key, so every claim in the report is traceable.
"""

from __future__ import annotations

from typing import Any

# HF spellings, in order of preference, for each fact.
HF_KEYS: dict[str, tuple[str, ...]] = {
    "hidden_size": ("hidden_size", "n_embd", "d_model", "dim"),
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "num_key_value_heads": ("num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num"),
    "head_dim": ("head_dim", "attention_head_dim", "kv_channels"),
    "vocab_size": ("vocab_size", "n_vocab", "padded_vocab_size"),
    "intermediate_size": ("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size"),
    "num_experts": ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"),
    "experts_per_token": ("num_experts_per_tok", "moe_topk", "top_k", "num_selected_experts"),
    "shared_experts": ("n_shared_experts", "num_shared_experts"),
    "sliding_window": ("sliding_window",),
    "tie_word_embeddings": ("tie_word_embeddings",),
    "max_position_embeddings": ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"),
    "activation": ("hidden_activation", "hidden_act", "activation_function"),
    "kv_lora_rank": ("kv_lora_rank",),
    "q_lora_rank": ("q_lora_rank",),
    "qk_rope_head_dim": ("qk_rope_head_dim",),
    "qk_nope_head_dim": ("qk_nope_head_dim",),
    "v_head_dim": ("v_head_dim",),
    "model_type": ("model_type",),
}
# GGUF metadata suffixes after "<arch>." for the same facts.
GGUF_KEYS: dict[str, str] = {
    "hidden_size": "embedding_length", "num_layers": "block_count",
    "num_attention_heads": "attention.head_count", "num_key_value_heads": "attention.head_count_kv",
    "head_dim": "attention.key_length", "intermediate_size": "feed_forward_length", "vocab_size": "vocab_size",
    "num_experts": "expert_count", "experts_per_token": "expert_used_count", "shared_experts": "expert_shared_count",
    "sliding_window": "attention.sliding_window", "max_position_embeddings": "context_length",
    "kv_lora_rank": "attention.kv_lora_rank", "q_lora_rank": "attention.q_lora_rank",
    "qk_rope_head_dim": "rope.dimension_count",
}
# llama.cpp architecture names -> transformers model_type.
GGUF_ARCH_TO_MODEL_TYPE = {
    "llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen2moe": "qwen2_moe", "qwen3": "qwen3",
    "qwen3moe": "qwen3_moe", "gemma": "gemma", "gemma2": "gemma2", "gemma3": "gemma3_text", "phi3": "phi3",
    "deepseek2": "deepseek_v2", "deepseek": "deepseek_v2", "gpt2": "gpt2", "gptneox": "gpt_neox",
    "falcon": "falcon", "starcoder2": "starcoder2", "olmo2": "olmo2", "granite": "granite", "bert": "bert",
    "granitemoe": "granitemoe", "mixtral": "mixtral", "opt": "opt",
}


class ConfigView:
    def __init__(self, config: dict[str, Any] | None, gguf_metadata: dict[str, Any] | None = None,
                 source: str = "config.json"):
        self.raw = dict(config or {})
        self.source = source
        self.gguf = dict(gguf_metadata or {})
        self.arch = str(self.gguf.get("general.architecture")) if self.gguf.get("general.architecture") else None
        # Multimodal wrappers (gemma3, llava...) keep the language model's facts in text_config.
        text = self.raw.get("text_config")
        self.nested = isinstance(text, dict) and "hidden_size" not in self.raw
        self.cfg = {**self.raw, **text} if self.nested and isinstance(text, dict) else self.raw

    @property
    def present(self) -> bool:
        return bool(self.cfg) or bool(self.gguf)

    def get(self, fact: str) -> tuple[Any, str | None]:
        for key in HF_KEYS.get(fact, (fact,)):
            if key in self.cfg and self.cfg[key] is not None:
                return self.cfg[key], f"{self.source}: {key}={_short(self.cfg[key])}"
        if self.arch and fact in GGUF_KEYS:
            key = f"{self.arch}.{GGUF_KEYS[fact]}"
            if self.gguf.get(key) is not None:
                value = self.gguf[key]
                if isinstance(value, list):  # per-layer arrays (e.g. head counts): report the largest
                    value = max(value) if value else None
                return value, f"gguf metadata: {key}={_short(value)}"
        return None, None

    def has(self, key: str) -> bool:
        return key in self.cfg

    def keys(self) -> set[str]:
        return set(self.cfg)

    def rope_evidence(self) -> str | None:
        for key in ("rope_theta", "rope_parameters", "rope_scaling", "rotary_pct", "rotary_dim", "rotary_emb_base",
                    "rope_type"):
            if self.cfg.get(key) is not None:
                return f"{self.source}: {key}={_short(self.cfg[key])}"
        for key, value in self.gguf.items():
            if ".rope." in key:
                return f"gguf metadata: {key}={_short(value)}"
        return None

    def gguf_model_type(self) -> tuple[str | None, str | None]:
        if not self.arch:
            return None, None
        return GGUF_ARCH_TO_MODEL_TYPE.get(self.arch, self.arch), f"gguf metadata: general.architecture={self.arch}"


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
