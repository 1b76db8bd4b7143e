"""Family and facts for tiny models of every reference family, with their identity hidden."""

from __future__ import annotations

import json

import pytest

from apps.detective import inspect_model
from apps.detective.families import FAMILIES, build_references, load_references

# family -> (attention kind, kv heads, mlp, experts, norm, position) with the SIZES of conftest.
EXPECTED = {
    "llama": ("gqa", 2, "gated", 0, "rmsnorm", "rope"), "mistral": ("gqa", 2, "gated", 0, "rmsnorm", "rope"),
    "mixtral": ("gqa", 2, "gated", 4, "rmsnorm", "rope"), "qwen2": ("gqa", 2, "gated", 0, "rmsnorm", "rope"),
    "qwen2_moe": ("gqa", 2, "gated", 4, "rmsnorm", "rope"), "qwen3": ("gqa", 2, "gated", 0, "rmsnorm", "rope"),
    "qwen3_moe": ("gqa", 2, "gated", 4, "rmsnorm", "rope"), "gemma": ("gqa", 2, "gated", 0, "rmsnorm", "rope"),
    "gemma2": ("gqa", 2, "gated", 0, "rmsnorm", "rope"), "gemma3_text": ("gqa", 2, "gated", 0, "rmsnorm", "rope"),
    "phi3": ("gqa", 2, "gated", 0, "rmsnorm", "rope"), "deepseek_v2": ("mla", 6, "gated", 4, "rmsnorm", "rope"),
    "deepseek_v3": ("mla", 6, "gated", 4, "rmsnorm", "rope"), "gpt2": ("mha", 6, "dense", 0, "layernorm", "learned"),
    "gpt_neox": ("mha", 6, "dense", 0, "layernorm", "rope"), "falcon": ("mqa", 1, "dense", 0, "layernorm", "rope"),
    "opt": ("mha", 6, "dense", 0, "layernorm", "learned"), "olmo2": ("gqa", 2, "gated", 0, "rmsnorm", "rope"),
    "granite": ("gqa", 2, "gated", 0, "rmsnorm", "rope"),
    "starcoder2": ("gqa", 2, "dense", 0, "layernorm", "rope"), "bert": ("mha", 6, "dense", 0, "layernorm", "learned"),
}
# Families that share every tensor name and shape rule: without a config they cannot be told apart.
TWINS = [{"llama", "mistral", "granite"}]


def test_every_issue_family_has_a_reference():
    refs = load_references()["families"]
    assert set(EXPECTED) == set(FAMILIES) == set(refs)


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_family_and_facts_with_model_type_stripped(zoo, family):
    r = inspect_model(str(zoo(family, hide="strip")))
    attention, kv, mlp, experts, norm, pos = EXPECTED[family]
    assert r.family == family, [(c.family, c.score) for c in r.candidates[:3]]
    assert r.candidates[0].score > r.candidates[1].score
    assert (r.attention, r.num_key_value_heads, r.mlp, r.num_experts, r.norm, r.position_embedding) == \
        (attention, kv, mlp, experts, norm, pos)
    assert r.num_layers == 3 and r.num_attention_heads == 6 and r.hidden_size == 96
    assert r.head_dim == 16
    assert r.vocab_size == 160
    assert r.evidence["attention"] and r.evidence["num_layers"]
    if r.kv_cache_bytes_per_token is not None and attention != "mla":
        assert r.kv_cache_bytes_per_token == 3 * 2 * kv * 16 * 2  # layers x (K+V) x kv heads x head_dim x fp16


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_family_without_config(zoo, family):
    r = inspect_model(str(zoo(family, hide="remove")))
    top = [c.family for c in r.candidates if c.score == r.candidates[0].score]
    twins = next((t for t in TWINS if family in t), {family})
    assert family in top and set(top) <= twins, top
    attention, kv, mlp, experts, norm, pos = EXPECTED[family]
    assert (r.mlp, r.num_experts, r.norm, r.num_layers, r.hidden_size) == (mlp, experts, norm, 3, 96)
    # Never invented: without a config or a position table the scheme is unknown.
    assert r.position_embedding == ("learned" if pos == "learned" else None)
    if family not in ("qwen3", "qwen3_moe", "gemma3_text", "deepseek_v2", "deepseek_v3"):
        # no per-head tensor reveals head_dim: head counts must stay unknown
        assert r.num_attention_heads is None and r.head_dim is None
        assert any("head count unknown" in n for n in r.notes)


def test_head_counts_recovered_from_shapes_alone(zoo):
    qwen3 = inspect_model(str(zoo("qwen3", hide="remove")))  # per-head q_norm width = head_dim
    assert (qwen3.num_attention_heads, qwen3.num_key_value_heads, qwen3.head_dim, qwen3.attention) == (6, 2, 16, "gqa")
    assert any("q_norm" in e for e in qwen3.evidence["head_dim"])
    ds = inspect_model(str(zoo("deepseek_v3", hide="remove")))  # MLA: q_b, kv_b and o shapes solve for heads
    assert (ds.attention, ds.num_attention_heads, ds.other_facts["kv_lora_rank"]) == ("mla", 6, 16)
    assert ds.kv_cache_bytes_per_token == 3 * (16 + 8) * 2  # latent + rope key per layer, fp16


def test_widths_prove_mha_and_grouping_without_config(zoo):
    gpt2 = inspect_model(str(zoo("gpt2", hide="remove")))
    assert gpt2.attention == "mha" and gpt2.num_attention_heads is None
    llama = inspect_model(str(zoo("llama", hide="remove")))
    assert llama.attention is None and llama.other_facts["kv_group_size"] == 3


def test_moe_details(zoo):
    q2 = inspect_model(str(zoo("qwen2_moe", hide="strip")))
    assert q2.num_experts == 4 and q2.experts_per_token == 2 and q2.shared_experts
    mix = inspect_model(str(zoo("mixtral", hide="remove")))
    assert mix.num_experts == 4 and mix.experts_per_token is None and mix.shared_experts == 0
    assert mix.params_by_component["experts"] > mix.params_by_component["attention"]


def test_renamed_model_type_is_not_trusted(zoo, tmp_path):
    src = zoo("qwen3", hide="strip")
    cfg = json.loads((src / "config.json").read_text())
    cfg["model_type"] = "acme_llm"
    dst = tmp_path / "renamed"
    dst.mkdir()
    (dst / "config.json").write_text(json.dumps(cfg))
    (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    r = inspect_model(str(dst))
    assert r.family == "qwen3" and any("acme_llm" in n for n in r.notes)


def test_false_declared_type_loses_to_structure(zoo, tmp_path):
    """A GPT-2 checkpoint whose config claims `llama`: the claim helps but the structure still disagrees."""
    src = zoo("gpt2")
    assert "declared" in inspect_model(str(src)).family_basis
    cfg = json.loads((src / "config.json").read_text())
    cfg["model_type"] = "llama"
    dst = tmp_path / "liar"
    dst.mkdir()
    (dst / "config.json").write_text(json.dumps(cfg))
    (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    r = inspect_model(str(dst))
    assert r.family == "gpt2" and "contradicts" in r.family_basis


def test_sharded_and_single_file(zoo):
    sharded = zoo("qwen3", hide="strip", shard_bytes=100_000)
    assert len(list(sharded.glob("*.safetensors"))) > 1 and list(sharded.glob("*.index.json"))
    r = inspect_model(str(sharded))
    whole = inspect_model(str(zoo("qwen3", hide="strip")))
    assert r.family == "qwen3" and r.params_total == whole.params_total and len(r.files) > 1
    single = inspect_model(str(zoo("gpt2", hide="remove") / "model.safetensors"))
    assert single.family == "gpt2" and single.position_embedding == "learned"


def test_sliding_window_and_memory(zoo):
    m = inspect_model(str(zoo("mistral", hide="strip", sliding_window=32)), context_length=1000)
    assert m.sliding_window == 32
    assert m.kv_cache_bytes_at_context == m.kv_cache_bytes_per_token * 32  # every layer capped at the window
    assert m.memory_bytes["bf16"] == 2 * m.params_total and m.memory_bytes["int4"] == m.params_total // 2
    q = inspect_model(str(zoo("qwen2", hide="strip")), context_length=1000)
    assert q.sliding_window is None and q.kv_cache_bytes_at_context == q.kv_cache_bytes_per_token * 1000


def test_shipped_references_match_installed_transformers():
    """families.json is exactly what the installed transformers defines (rebuilt here for a sample)."""
    import transformers

    references = load_references()
    built_with = references["transformers_version"]
    if transformers.__version__ != built_with:  # a new release may rename config keys: the file is rebuilt for it
        pytest.skip(f"families.json was built with transformers {built_with}, {transformers.__version__} is "
                    "installed: python -m apps.detective.families --rebuild")
    shipped = references["families"]
    rebuilt = build_references(["qwen3", "gpt2", "deepseek_v3", "falcon"])["families"]
    for family, ref in rebuilt.items():
        assert ref["patterns"] == shipped[family]["patterns"], family
        assert ref["features"] == shipped[family]["features"], family
        assert ref["config_keys"] == shipped[family]["config_keys"], family
