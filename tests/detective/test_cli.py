"""`conductor detect` through the real CLI entry point (click's runner), JSON contract and text card."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cluster.cli import cli
from deployments import packaged

REQUIRED = ["family", "candidates", "hidden_size", "num_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "attention", "mlp", "num_experts", "tie_word_embeddings", "vocab_size", "position_embedding",
            "norm", "params_total", "memory_bytes", "kv_cache_bytes_per_token", "evidence"]


def test_json_contract_gguf():
    result = CliRunner().invoke(cli, ["detect", str(packaged.smollm2_gguf()), "--json", "--context", "8192"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)  # exactly one JSON document
    assert all(k in data for k in REQUIRED)
    assert data["family"] == "llama" and data["candidates"][0]["family"] == "llama"
    assert [c["score"] for c in data["candidates"]] == sorted((c["score"] for c in data["candidates"]), reverse=True)
    assert set(data["memory_bytes"]) >= {"fp32", "bf16", "int8", "int4"}
    assert data["kv_cache_bytes_at_context"] == 8192 * data["kv_cache_bytes_per_token"]
    assert isinstance(data["tie_word_embeddings"], bool) and data["evidence"]["attention"]


def test_text_card_hidden_identity(zoo):
    result = CliRunner().invoke(cli, ["detect", str(zoo("qwen3", hide="remove"))])
    assert result.exit_code == 0, result.output
    assert "qwen3" in result.output.splitlines()[0] and "Query heads" in result.output


def test_unknowns_are_null_not_guessed(zoo):
    result = CliRunner().invoke(cli, ["detect", str(zoo("phi3", hide="remove")), "--json"])
    data = json.loads(result.output)
    assert data["family"] == "phi3"
    # fused q/k/v and no config: heads, head_dim, rope-vs-alibi and top-k cannot be known
    assert data["num_attention_heads"] is None and data["head_dim"] is None and data["position_embedding"] is None
    assert data["kv_cache_bytes_per_token"] == 3 * 2 * 32 * 2  # but K/V widths (2 kv heads x 16) still are
    assert any("fused" in n for n in data["notes"])
