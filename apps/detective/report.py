"""`inspect_model(path)` -> `Report`: the one entry point the CLI, the HTTP app and the UI share."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field

from apps.detective.config_view import ConfigView
from apps.detective.families import FAMILIES, load_references, score_families
from apps.detective.headers import DetectiveError, no_gc, read_model

DEFAULT_CONTEXT = 4096


class Candidate(BaseModel):
    family: str = Field(description="transformers model_type of the reference family")
    name: str = Field(description="Human name of the family")
    score: float = Field(description="0..1; features, tensor naming and config keys (plus any self-declared type)")
    feature_score: float = Field(description="Share of weighted structural features that agree")
    differences: list[str] = Field(default_factory=list, description="What separates this model from the family")


class Report(BaseModel):
    path: str = Field(description="What was inspected")
    format: str = Field(description="safetensors or gguf")
    family: str | None = Field(description="Nearest family as a transformers model_type (e.g. llama, qwen3_moe)")
    family_name: str | None = Field(None, description="Human name of the nearest family")
    family_basis: str = Field("", description="Why this family: declared type, or structure alone")
    candidates: list[Candidate] = Field(default_factory=list, description="Ranked families, best first")
    hidden_size: int | None = None
    num_layers: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    attention: str | None = Field(None, description="mha | gqa | mqa | mla; null when shapes cannot tell")
    qk_norm: bool | None = None
    attention_bias: dict[str, bool] | None = None
    mlp: str | None = Field(None, description="gated | dense")
    mlp_activation: str | None = None
    intermediate_size: int | None = None
    num_experts: int | None = Field(None, description="Routed experts; 0 when dense")
    experts_per_token: int | None = None
    shared_experts: int | bool | None = None
    tie_word_embeddings: bool | None = None
    vocab_size: int | None = None
    position_embedding: str | None = Field(None, description="rope | learned | alibi | none; null when unknown")
    max_position_embeddings: int | None = None
    norm: str | None = Field(None, description="rmsnorm | layernorm")
    norm_placement: str | None = None
    sliding_window: int | None = None
    params_total: int = 0
    params_by_component: dict[str, int] = Field(default_factory=dict)
    params_by_dtype: dict[str, int] = Field(default_factory=dict)
    tensors_by_component: dict[str, int] = Field(default_factory=dict)
    memory_bytes: dict[str, int] = Field(default_factory=dict, description="Weights at fp32/bf16/int8/int4 + stored")
    kv_cache_bytes_per_token: int | None = Field(None, description="fp16/bf16 K+V bytes per token, all layers")
    context_length: int = Field(DEFAULT_CONTEXT, description="Context used for kv_cache_bytes_at_context")
    kv_cache_bytes_at_context: int | None = None
    evidence: dict[str, list[str]] = Field(default_factory=dict, description="fact -> tensor names/shapes or keys")
    notes: list[str] = Field(default_factory=list, description="What cannot be known, and disagreements")
    other_facts: dict[str, Any] = Field(default_factory=dict)
    num_tensors: int = 0
    files: list[str] = Field(default_factory=list)
    bytes_read: int = Field(0, description="Header bytes read to produce this report")
    file_bytes: int = Field(0, description="Total size of the model files")
    elapsed_s: float = 0.0


def _claim(cv: ConfigView) -> tuple[str | None, str | None, str | None]:
    """(declared model_type if any, evidence, note). A renamed/unknown type is reported, not trusted."""
    declared, key = cv.get("model_type")
    if declared is None:
        declared, key = cv.gguf_model_type()
    if declared is None:
        return None, None, None
    known = load_references()["families"]
    if declared in known:
        return str(declared), key, None
    if cv.nested and cv.cfg.get("model_type") in known:
        return str(cv.cfg["model_type"]), key, None
    return str(declared), key, (f"declared type {declared!r} has no reference family here; matched by keys and "
                                 "shapes instead")


def _family(report: dict[str, Any], cands: list[dict[str, Any]], claim: str | None, claim_key: str | None,
            known_claim: bool) -> None:
    best = cands[0]
    if claim and not known_claim and _is_transformers_type(claim):
        report.update(family=claim, family_name=claim, family_basis=f"declared ({claim_key}); no reference built")
        return
    report.update(family=best["family"], family_name=best["name"])
    ties = [c["family"] for c in cands[1:] if c["score"] == best["score"]]
    if claim and known_claim and claim != best["family"]:
        report["family_basis"] = f"structure; the declared {claim!r} ({claim_key}) contradicts the weights"
    elif claim and known_claim and claim == best["family"]:
        report["family_basis"] = f"declared ({claim_key}) and consistent with the structure"
    elif ties:
        report["family_basis"] = f"structure only; indistinguishable from {', '.join(ties)} without a config"
    else:
        report["family_basis"] = "structure, tensor naming and config keys" if report.get("_has_cfg") \
            else "structure and tensor naming"


def _is_transformers_type(model_type: str) -> bool:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return model_type in CONFIG_MAPPING_NAMES


def _kv_at_context(values: dict[str, Any], ctx: int) -> int | None:
    per_token, layers = values.get("kv_cache_bytes_per_token"), values.get("num_layers")
    if not per_token or not layers:
        return None
    window = values.get("sliding_window")
    if not window:
        return per_token * ctx
    sliding = values.get("sliding_window_layers") or 0
    per_layer = per_token / layers
    return int(per_layer * ((layers - sliding) * ctx + sliding * min(ctx, window)))


@no_gc
def inspect_model(path: str, context_length: int | None = None) -> Report:
    """Read headers only and report what the model is, with evidence. Raises DetectiveError on bad input."""
    return _inspect(path, context_length)


def _inspect(path: str, context_length: int | None) -> Report:
    from apps.detective.analysis import analyze

    started = time.perf_counter()
    ctx = int(context_length or DEFAULT_CONTEXT)
    if ctx <= 0 or ctx > 10**8:
        raise DetectiveError(f"context length {ctx} is out of range (1..100000000)")
    mf = read_model(path)
    facts, tensors, cv = analyze(mf)
    claim, claim_key, note = _claim(cv)
    known = claim in load_references()["families"] if claim else False
    patterns = tensors.patterns if mf.format == "safetensors" else None
    cands = score_families(facts.features, patterns, cv, claim if known else None)
    values = dict(facts.values)
    report: dict[str, Any] = {k: v for k, v in values.items() if k in Report.model_fields}
    report["other_facts"] = {k: v for k, v in values.items() if k not in Report.model_fields}
    report["_has_cfg"] = bool(cv.cfg)
    _family(report, cands, claim, claim_key, known)
    report.pop("_has_cfg")
    notes = list(facts.notes) + ([note] if note else [])
    if claim_key:
        facts.evidence["family"].append(claim_key)
    facts.evidence["family"].append(report["family_basis"])
    report.update(path=str(path), format=mf.format, candidates=[Candidate(**c) for c in cands],
                  evidence={k: v for k, v in facts.evidence.items() if v}, notes=notes, context_length=ctx,
                  kv_cache_bytes_at_context=_kv_at_context(values, ctx), num_tensors=len(mf.tensors),
                  files=mf.files, bytes_read=mf.bytes_read, file_bytes=mf.total_file_bytes)
    report["elapsed_s"] = round(time.perf_counter() - started, 4)
    return Report(**report)


__all__ = ["Report", "Candidate", "inspect_model", "DetectiveError", "FAMILIES"]
