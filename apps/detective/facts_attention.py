"""Attention facts: layout (separate / fused / MLA), head counts, head_dim, kind (mha/gqa/mqa/mla), qk-norm, biases,
and the KV-cache cost per token that follows from them."""

from __future__ import annotations

from apps.detective.config_view import ConfigView
from apps.detective.facts import Facts, Tensors, ev, in_features, out_features


def attention(f: Facts, t: Tensors, cv: ConfigView) -> None:
    hidden = f.get("hidden_size")
    if t.has("kv_a"):
        _mla(f, t, cv, hidden)
    else:
        _standard(f, t, cv, hidden)
    qn = t.first("q_norm")
    f.set("qk_norm", qn is not None, *( [ev(qn), ev(t.first("k_norm"))] if qn else
                                         ["no q_norm/k_norm tensors in the attention blocks"]))
    if qn and f.get("head_dim") and qn[1].shape and qn[1].shape[0] != f.get("head_dim"):
        f.values["qk_norm_scope"] = "full-width"
    elif qn:
        f.values["qk_norm_scope"] = "per-head"
    qkv_bias = any(t.has(r, bias=True) for r in ("q", "k", "v", "qkv"))
    o_bias = t.has("o", bias=True)
    f.set("attention_bias", {"qkv": qkv_bias, "o": o_bias},
          *(f"{n}" for r in ("q", "qkv", "o") for n, _, x in t.by_role.get(r, [])[:2] if x.bias))
    f.features.update(qkv_bias=qkv_bias, o_bias=o_bias, qk_norm=qn is not None,
                      qk_norm_scope=f.values.get("qk_norm_scope"))


def _standard(f: Facts, t: Tensors, cv: ConfigView, hidden: int | None) -> None:
    q, k, v, qkv, o = (t.first(r, "attention") for r in ("q", "k", "v", "qkv", "o"))
    q_w = k_w = v_w = None
    if q and k:
        q_w, k_w = out_features(q[1], hidden), out_features(k[1], hidden)
        v_w = out_features(v[1], hidden) if v else k_w
        f.features["attn_layout"] = "separate"
        f.set("attention_widths", {"q": q_w, "k": k_w, "v": v_w}, ev(q), ev(k), ev(v))
    elif qkv:
        total = out_features(qkv[1], hidden)
        q_w = in_features(o[1], hidden) if o else hidden
        k_w = v_w = (total - q_w) // 2 if q_w and total > q_w else None
        f.features["attn_layout"] = "fused_qkv"
        f.set("attention_widths", {"qkv": total, "q": q_w, "k": k_w, "v": v_w}, ev(qkv),
              f"{ev(o)}: o-projection input = query width" if o else "query width taken as hidden size")
    else:
        f.features["attn_layout"] = None
    f.values["_kv_width"] = (k_w or 0) + (v_w or 0) if k_w else None
    _heads(f, t, cv, q_w, k_w, qkv is not None and q is None)


def _heads(f: Facts, t: Tensors, cv: ConfigView, q_w: int | None, k_w: int | None, fused: bool) -> None:
    heads, hkey = cv.get("num_attention_heads")
    kv, kvkey = cv.get("num_key_value_heads")
    hd, hdkey = cv.get("head_dim")
    if cv.cfg.get("multi_query") and not cv.cfg.get("new_decoder_architecture"):  # Falcon-7B style MQA
        kv, kvkey = 1, f"{cv.source}: multi_query=true"
    if heads is not None and kv is None and cv.present:
        kv, kvkey = heads, f"{hkey} and no key/value head count: one kv head per query head"
    qn = t.first("q_norm")
    if hd is None and qn and q_w and qn[1].shape and q_w % qn[1].shape[0] == 0 and qn[1].shape[0] < q_w:
        hd, hdkey = qn[1].shape[0], f"{ev(qn)}: per-head q-norm width = head_dim"
    if hd is None and heads and q_w:
        hd, hdkey = q_w // int(heads), f"query width {q_w} / {heads} heads"
    if heads is None and hd and q_w:
        heads, hkey = q_w // int(hd), f"query width {q_w} / head_dim {hd}"
    if kv is None and hd and k_w:
        kv, kvkey = k_w // int(hd), f"key width {k_w} / head_dim {hd}"
    if kv and hd and k_w and int(kv) * int(hd) != k_w:
        f.notes.append(f"{kvkey} x head_dim {hd} != key width {k_w} in the weights; shapes win")
        kv, kvkey = k_w // int(hd), f"key width {k_w} / head_dim {hd}"
    f.set("num_attention_heads", int(heads) if heads else None, hkey)
    f.set("num_key_value_heads", int(kv) if kv else None, kvkey)
    f.set("head_dim", int(hd) if hd else None, hdkey)
    if heads and kv:
        kind = "mha" if kv == heads else ("mqa" if kv == 1 else "gqa")
        widths = f.evidence.get("attention_widths", [])[:2]
        f.set("attention", kind, f"{heads} query heads, {kv} key/value heads", *widths)
    elif q_w and k_w and q_w == k_w:
        f.set("attention", "mha", f"key width {k_w} == query width {q_w}: one kv head per query head")
    else:
        f.set("attention", None)
    if heads is None:
        why = "q/k/v are fused in one projection" if fused else "no per-head tensor or config key shows head_dim"
        ratio = f" (each kv head serves {q_w // k_w} query heads)" if q_w and k_w and k_w < q_w else ""
        f.notes.append(f"head count unknown: {why}; widths fix only heads x head_dim{ratio}")
    if q_w and k_w and k_w < q_w:
        f.values["kv_group_size"] = q_w // k_w


def _mla(f: Facts, t: Tensors, cv: ConfigView, hidden: int | None) -> None:
    """DeepSeek multi-head latent attention: q_b_out = H*(nope+rope), kv_b_out = H*(nope+v), o_in = H*v."""
    kv_a, kv_b, o = t.first("kv_a"), t.first("kv_b"), t.first("o", "attention")
    q_b = t.first("q_b") or t.first("q", "attention")
    latent_norm = next((i for i in t.by_role.get("mla_norm", []) if "kv" in i[0]), None)
    f.features["attn_layout"] = "mla"
    kv_a_out = out_features(kv_a[1], hidden)
    rank, rkey = cv.get("kv_lora_rank")
    if rank is None and latent_norm:
        rank, rkey = latent_norm[1].shape[0], f"{ev(latent_norm)}: latent norm width = kv_lora_rank"
    rope, ropekey = cv.get("qk_rope_head_dim")
    if rope is None and rank is not None:
        rope, ropekey = kv_a_out - int(rank), f"{ev(kv_a)}: kv_a output {kv_a_out} - kv_lora_rank {rank}"
    heads, hkey = cv.get("num_attention_heads")
    if heads is None and rope and q_b and kv_b and o:
        q_out, kvb_out, o_in = out_features(q_b[1], None), out_features(kv_b[1], None), in_features(o[1], hidden)
        n = (q_out - kvb_out + o_in) / int(rope)
        if n == int(n) and n > 0:
            heads, hkey = int(n), f"({ev(q_b)}) - ({ev(kv_b)}) + o input {o_in}, / rope dim {rope}"
    nope, _ = cv.get("qk_nope_head_dim")
    f.set("attention", "mla", f"{ev(kv_a)}: keys/values compressed to a shared latent", ev(kv_b))
    f.set("num_attention_heads", int(heads) if heads else None, hkey)
    f.set("num_key_value_heads", int(heads) if heads else None,
          "MLA: every query head gets its own key/value, decompressed from the latent")
    head_dim = int(nope) + int(rope) if nope is not None and rope is not None else None
    if head_dim is None and heads and q_b:
        head_dim = out_features(q_b[1], None) // int(heads)
    f.set("head_dim", head_dim, "MLA query/key head_dim = nope + rope parts")
    f.set("kv_lora_rank", int(rank) if rank is not None else None, rkey)
    f.set("qk_rope_head_dim", int(rope) if rope is not None else None, ropekey)
    f.values["_kv_width"] = kv_a_out
    f.values["_kv_width_evidence"] = f"MLA caches the latent + rope key: {ev(kv_a)} -> {kv_a_out} values per layer"


def kv_cache(f: Facts, t: Tensors) -> None:
    width = f.values.pop("_kv_width", None)
    why = f.values.pop("_kv_width_evidence", None)
    layers = len({r.layer for _, _, r in t.items if r.component == "attention" and r.layer is not None})
    if f.features.get("encoder"):
        f.set("kv_cache_bytes_per_token", None, "encoder: no autoregressive KV cache")
        return
    if not width or not layers:
        f.set("kv_cache_bytes_per_token", None, "key/value widths unknown")
        return
    per_token = width * layers * 2
    f.set("kv_cache_bytes_per_token", per_token,
          why or f"{layers} layers x (key + value width {width}) x 2 bytes (fp16/bf16 cache)")
