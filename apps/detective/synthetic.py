"""Synthetic sharded safetensors models that hold *only headers* (sparse files): a 100 GB model costs ~0 disk.

Used by the 10^5-tensor speed test and the benchmark. The tensor table is a Qwen3-MoE-style model; every file is
truncated to its full logical size, so header offsets are valid but no data block was ever written.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path


def _tensors(layers: int, experts: int, hidden: int, moe_inter: int, vocab: int,
             heads: int = 32, kv_heads: int = 4, head_dim: int = 128) -> list[tuple[str, list[int]]]:
    out: list[tuple[str, list[int]]] = [("model.embed_tokens.weight", [vocab, hidden])]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", [hidden]), (p + "post_attention_layernorm.weight", [hidden]),
                (p + "self_attn.q_proj.weight", [heads * head_dim, hidden]),
                (p + "self_attn.k_proj.weight", [kv_heads * head_dim, hidden]),
                (p + "self_attn.v_proj.weight", [kv_heads * head_dim, hidden]),
                (p + "self_attn.o_proj.weight", [hidden, heads * head_dim]),
                (p + "self_attn.q_norm.weight", [head_dim]), (p + "self_attn.k_norm.weight", [head_dim]),
                (p + "mlp.gate.weight", [experts, hidden])]
        for e in range(experts):
            q = f"{p}mlp.experts.{e}."
            out += [(q + "gate_proj.weight", [moe_inter, hidden]), (q + "up_proj.weight", [moe_inter, hidden]),
                    (q + "down_proj.weight", [hidden, moe_inter])]
    out += [("model.norm.weight", [hidden]), ("lm_head.weight", [vocab, hidden])]
    return out


def write_sharded(folder: Path, layers: int = 64, experts: int = 512, hidden: int = 1536, moe_inter: int = 256,
                  vocab: int = 151936, shards: int = 40) -> dict[str, int]:
    """Write `shards` header-only .safetensors files + index + config. Returns counts and logical bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = _tensors(layers, experts, hidden, moe_inter, vocab)
    per = -(-len(tensors) // shards)
    weight_map, total = {}, 0
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for tname, shape in tensors[s * per:(s + 1) * per]:
            n = 2
            for d in shape:
                n *= d
            header[tname] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
            weight_map[tname] = name
            offset += n
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(folder / name, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            f.truncate(8 + len(raw) + offset)  # sparse: the data region is a hole
        total += 8 + len(raw) + offset
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 32, "num_key_value_heads": 4,
        "head_dim": 128, "num_experts": experts, "num_experts_per_tok": 8, "moe_intermediate_size": moe_inter,
        "vocab_size": vocab, "rope_theta": 1e6, "tie_word_embeddings": False, "hidden_act": "silu"}))
    return {"tensors": len(tensors), "bytes": total, "shards": shards}
