"""Embeddings, layer count, norms, positions, tied embeddings, sliding window and the parameter inventory."""

from __future__ import annotations

from collections import defaultdict

from apps.detective.config_view import ConfigView
from apps.detective.facts import Facts, Tensors, ev

BUFFER_DTYPES = {"I64", "I32", "U64", "BOOL"}
BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}


def embedding_and_layers(f: Facts, t: Tensors, cv: ConfigView) -> None:
    emb = t.first("embed")
    hidden = vocab = None
    if emb and len(emb[1].shape) == 2:
        vocab, hidden = emb[1].shape
        f.set("hidden_size", hidden, f"{ev(emb)}: embedding is [vocab, hidden]")
        f.set("vocab_size", vocab, f"{ev(emb)}: embedding rows = vocabulary")
    # The residual stream's width is what each layer's norms normalise; an embedding can be narrower (OPT-350m).
    norm = next((i for i in t.by_role.get("norm", []) if len(i[1].shape) == 1 and i[2].layer is not None), None)
    if norm and hidden != norm[1].shape[0]:
        if hidden is not None:
            f.notes.append(f"embedding width {hidden} differs from the layers' width {norm[1].shape[0]} "
                           "(projected embeddings)")
        hidden = norm[1].shape[0]
        f.set("hidden_size", hidden, f"{ev(norm)}: per-layer norm width = hidden size")
    for fact, shape_value in (("hidden_size", hidden), ("vocab_size", vocab)):
        value, key = cv.get(fact)
        if shape_value is None and value is not None:
            f.set(fact, int(value), key)
        elif key and value is not None and shape_value is not None:
            if int(value) == shape_value:
                f.evidence[fact].append(key)
            else:
                f.notes.append(f"{key} disagrees with the tensor shapes ({fact} {shape_value}); shapes win")
    n_layers = len(t.layers)
    if n_layers:
        f.set("num_layers", n_layers, f"layer indices {t.layers[0]}..{t.layers[-1]} in tensor names "
              f"({len(t.items)} tensors)")
    else:
        value, key = cv.get("num_layers")
        f.set("num_layers", int(value) if value is not None else None, key)
    f.features["encoder"] = t.has("token_type") or any("encoder.layer" in n for n, _, _ in t.items[:200])


def norms(f: Facts, t: Tensors) -> None:
    items = t.by_role.get("norm", [])
    if not items:
        f.set("norm", None)
        f.notes.append("no norm tensors: the norm kind cannot be seen (non-parametric norms leave no weights)")
        return
    with_bias = [n for n, _, r in items if r.bias]
    kind = "layernorm" if with_bias else "rmsnorm"
    example = ev(items[0])
    why = (f"norms carry a bias ({with_bias[0]}): LayerNorm" if with_bias
           else f"norms have a weight and no bias ({example}): RMSNorm-style")
    f.set("norm", kind, why)
    first_layer = t.layers[0] if t.layers else None
    per_layer = sorted({r.path for _, _, r in items if r.layer == first_layer and not r.bias})
    f.features["norm"] = kind
    f.features["norms_per_layer"] = len(per_layer)
    f.set("norms_per_layer", len(per_layer), *(f"layer {first_layer}: {p}" for p in per_layer))
    f.set("norm_placement", _placement(per_layer), *(f"layer {first_layer}: {p}" for p in per_layer))
    f.features["norm_placement"] = f.get("norm_placement")


def _placement(paths: list[str]) -> str | None:
    leaves = [p.rsplit(".", 1)[-1].lower() for p in paths]
    full = [p.lower() for p in paths]
    if len(paths) == 4:
        return "sandwich"
    if len(paths) == 1:
        return "parallel"
    if any("post_feedforward" in x for x in leaves) and not any(x.startswith(("input", "pre")) for x in leaves):
        return "post"
    if all("output" in x for x in full):
        return "post"
    return "pre" if paths else None


def position(f: Facts, t: Tensors, cv: ConfigView) -> None:
    pos = t.first("pos_embed")
    if pos:
        f.set("position_embedding", "learned", f"{ev(pos)}: a learned position table")
        f.set("max_position_embeddings", pos[1].shape[0], ev(pos))
        f.features["learned_pos"] = True
        return
    f.features["learned_pos"] = False
    value, key = cv.get("max_position_embeddings")
    if value is not None:
        f.set("max_position_embeddings", int(value), key)
    if cv.cfg.get("alibi") or cv.cfg.get("position_embedding_type") == "alibi":
        f.set("position_embedding", "alibi", f"{cv.source}: alibi=true")
        return
    rope = cv.rope_evidence()
    if rope:
        f.set("position_embedding", "rope", "no position-embedding tensor", rope)
        return
    buf = t.first("rope_buffer")
    if buf:
        f.set("position_embedding", "rope", f"{ev(buf)}: rotary inv_freq buffer")
        return
    f.set("position_embedding", None, "no position-embedding tensor and no config")
    f.notes.append("position scheme unknown: without a position table, rope / alibi / none look identical in "
                   "weights and there is no config to say which")


def tied_and_window(f: Facts, t: Tensors, cv: ConfigView) -> None:
    head = t.first("lm_head")
    value, key = cv.get("tie_word_embeddings")
    if head:
        f.set("tie_word_embeddings", False, f"{ev(head)}: a separate output projection is stored")
        if value:
            f.notes.append(f"{key} but an output projection tensor is stored too")
    elif value is not None:
        f.set("tie_word_embeddings", bool(value), key, "no lm_head tensor stored")
    elif f.features.get("encoder"):
        f.set("tie_word_embeddings", None, "encoder checkpoint with no output head")
    else:
        f.set("tie_word_embeddings", True, "no lm_head/output tensor: the output projection reuses the embedding")
    f.features["tied"] = f.get("tie_word_embeddings")
    window, wkey = cv.get("sliding_window")
    if cv.cfg.get("use_sliding_window") is False and window:
        f.set("sliding_window", None, f"{cv.source}: use_sliding_window=false (sliding_window={window} unused)")
    elif window:
        f.set("sliding_window", int(window), wkey)
        types = cv.cfg.get("layer_types")
        if isinstance(types, list) and types:
            n = sum(1 for x in types if "sliding" in str(x))
            f.set("sliding_window_layers", n, f"{cv.source}: layer_types has {n}/{len(types)} sliding layers")
        elif cv.cfg:
            f.set("sliding_window_layers", f.get("num_layers"), f"{cv.source}: no layer_types, so the window "
                  "applies to every layer")
        else:
            f.notes.append("which layers use the sliding window is not in the metadata: the KV cache at context "
                           "is given for full attention (an upper bound)")
    else:
        f.set("sliding_window", None, *([wkey] if wkey else []))
        if not cv.present:
            f.notes.append("sliding window unknown: it is an attention mask setting, invisible in weights")


def inventory(f: Facts, t: Tensors) -> None:
    by_comp: dict[str, int] = defaultdict(int)
    tensors_by_comp: dict[str, int] = defaultdict(int)
    by_dtype: dict[str, int] = defaultdict(int)
    stored = 0
    for name, info, role in t.items:
        if info.dtype in BUFFER_DTYPES:  # index buffers (position_ids), not parameters
            continue
        by_comp[role.component] += info.numel
        tensors_by_comp[role.component] += 1
        by_dtype[info.dtype] += info.numel
        stored += info.nbytes
    total = sum(by_comp.values())
    f.set("params_total", total, f"sum of {len(t.items)} tensor shapes")
    f.values["params_by_component"] = dict(sorted(by_comp.items(), key=lambda kv: -kv[1]))
    f.values["tensors_by_component"] = dict(tensors_by_comp)
    f.values["params_by_dtype"] = dict(by_dtype)
    memory = {k: int(total * b) for k, b in BYTES_PER_PARAM.items()}
    memory["stored"] = stored
    f.set("memory_bytes", memory, f"params_total x bytes per parameter; stored = {stored} bytes as on disk")
