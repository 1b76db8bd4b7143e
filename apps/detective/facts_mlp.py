"""MLP facts: gated (SwiGLU/GeGLU) vs dense, intermediate size, biases, MoE experts, shared experts and top-k."""

from __future__ import annotations

from apps.detective.config_view import ConfigView
from apps.detective.facts import Facts, Tensors, ev, in_features


def mlp(f: Facts, t: Tensors, cv: ConfigView) -> None:
    hidden = f.get("hidden_size")
    gate, up, down, fused = (t.first(r) for r in ("gate", "up", "down", "gate_up"))
    gated = gate is not None or fused is not None
    if gated or up:
        f.set("mlp", "gated" if gated else "dense",
              *( [ev(gate) or ev(fused), ev(up), ev(down)] if gated
                 else [f"{ev(up)}: one up-projection, no gate", ev(down)]))
    else:
        f.set("mlp", None)
    f.features["mlp"] = f.get("mlp")
    f.features["gate_up_fused"] = fused is not None and fused[2].component != "experts"
    act, akey = cv.get("activation")
    if act is not None:
        name = str(act)
        kind = ("SwiGLU" if "silu" in name or "swish" in name else "GeGLU" if "gelu" in name else name) if gated \
            else name
        f.set("mlp_activation", kind, akey)
    else:
        f.set("mlp_activation", None)
    dense_down = t.first("down", "mlp")
    if dense_down:
        f.set("intermediate_size", in_features(dense_down[1], hidden), f"{ev(dense_down)}: down-projection input")
    f.features["mlp_bias"] = t.has("up", bias=True) or t.has("down", bias=True)
    f.set("mlp_bias", f.features["mlp_bias"])
    _moe(f, t, cv, hidden)


def _moe(f: Facts, t: Tensors, cv: ConfigView, hidden: int | None) -> None:
    experts = t.component("experts")
    shared = t.component("shared_experts")
    f.features["moe"] = bool(experts)
    f.features["router_bias"] = any("e_score_correction" in n or "exp_probs_b" in n for n, _, _ in t.component("router"))
    f.features["shared_experts"] = bool(shared)
    if not experts:
        f.set("num_experts", 0, "no expert tensors: dense MLP in every layer")
        f.set("experts_per_token", None)
        return
    fused = next((i for i in experts if i[2].fused_experts), None)
    if fused:
        n, why = fused[1].shape[0], f"{ev(fused)}: experts stacked on the first axis"
    else:
        first_layer = experts[0][2].layer
        idx = {int(p) for name, _, r in experts if r.layer == first_layer
               for p in name.split("experts.", 1)[1].split(".")[:1] if p.isdigit()}
        n, why = len(idx), f"layer {first_layer}: expert indices 0..{max(idx) if idx else 0} ({experts[0][0]})"
    router = t.first("router")
    f.set("num_experts", n, why, f"{ev(router)}: router rows = experts" if router else None)
    moe_layers = sorted({r.layer for _, _, r in experts if r.layer is not None})
    f.set("moe_layers", len(moe_layers), f"expert tensors in {len(moe_layers)} of {len(t.layers)} layers")
    k, kkey = cv.get("experts_per_token")
    f.set("experts_per_token", int(k) if k is not None else None, kkey or "top-k is a routing setting, not stored "
          "in the weights")
    s, skey = cv.get("shared_experts")
    if shared:
        f.set("shared_experts", int(s) if s is not None else True, skey, ev(shared[0]))
    else:
        f.set("shared_experts", 0, "no shared-expert tensors")
    down = next((i for i in experts if i[2].role in ("down",)), None)
    if down:
        f.set("moe_intermediate_size", in_features(down[1], hidden) if len(down[1].shape) == 2
              else down[1].shape[2], ev(down))
