"""The report as a readable card (Markdown): used by the CLI's text output and the Gradio tab."""

from __future__ import annotations

from apps.detective.report import Report

CARD_FACTS = [
    ("hidden_size", "Hidden size"), ("num_layers", "Layers"), ("vocab_size", "Vocabulary"),
    ("attention", "Attention"), ("num_attention_heads", "Query heads"), ("num_key_value_heads", "KV heads"),
    ("head_dim", "Head dim"), ("qk_norm", "QK-norm"), ("attention_bias", "Attention biases"), ("mlp", "MLP"),
    ("mlp_activation", "Activation"), ("intermediate_size", "MLP width"), ("num_experts", "Routed experts"),
    ("experts_per_token", "Experts per token"), ("shared_experts", "Shared experts"), ("norm", "Norm"),
    ("norm_placement", "Norm placement"), ("position_embedding", "Positions"),
    ("max_position_embeddings", "Max positions"), ("tie_word_embeddings", "Tied embeddings"),
    ("sliding_window", "Sliding window"),
]


def human_bytes(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def human_count(n: int | None) -> str:
    if n is None:
        return "unknown"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _value(v: object) -> str:
    if v is None:
        return "*unknown*"
    if isinstance(v, dict):
        return ", ".join(f"{k}={x}" for k, x in v.items())
    return str(v)


def markdown_card(r: Report, evidence: bool = True) -> str:
    top = r.candidates[0] if r.candidates else None
    lines = [f"### {r.family_name or r.family or 'unknown'} (`{r.family}`)",
             f"{r.format} · {r.num_tensors} tensors · {human_count(r.params_total)} parameters · read "
             f"{human_bytes(r.bytes_read)} of {human_bytes(r.file_bytes)} in {r.elapsed_s:.3f} s",
             f"*Why this family:* {r.family_basis}" + (f" (score {top.score:.2f})" if top else ""), "",
             "| fact | value | evidence |", "|---|---|---|"]
    for key, label in CARD_FACTS:
        ev = "; ".join(r.evidence.get(key, [])[:3]) if evidence else ""
        lines.append(f"| {label} | {_value(getattr(r, key))} | {ev.replace('|', '/')} |")
    kv = r.kv_cache_bytes_per_token
    lines += ["", "**Memory (weights):** " + ", ".join(f"{k} {human_bytes(v)}" for k, v in r.memory_bytes.items()),
              f"**KV cache:** {human_bytes(kv)} per token; {human_bytes(r.kv_cache_bytes_at_context)} at "
              f"{r.context_length} tokens"]
    if r.notes:
        lines += ["", "**Cannot be known / disagreements:**"] + [f"- {n}" for n in r.notes]
    return "\n".join(lines)


def text_card(r: Report) -> str:
    """Plain text for terminals: the card without table markup."""
    out = [f"{r.family_name or r.family} [{r.family}] - {r.family_basis}",
           f"  {r.format}, {r.num_tensors} tensors, {human_count(r.params_total)} params, read "
           f"{human_bytes(r.bytes_read)} of {human_bytes(r.file_bytes)} in {r.elapsed_s:.3f}s"]
    for key, label in CARD_FACTS:
        ev = r.evidence.get(key, [])
        out.append(f"  {label:18} {_value(getattr(r, key)):24} {ev[0] if ev else ''}")
    out.append("  Memory: " + ", ".join(f"{k} {human_bytes(v)}" for k, v in r.memory_bytes.items()))
    out.append(f"  KV cache: {human_bytes(r.kv_cache_bytes_per_token)}/token, "
               f"{human_bytes(r.kv_cache_bytes_at_context)} at {r.context_length} tokens")
    out.append("  Nearest families: " + ", ".join(f"{c.family} {c.score:.2f}" for c in r.candidates[:5]))
    out += [f"  note: {n}" for n in r.notes]
    return "\n".join(out)
