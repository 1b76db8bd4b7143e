"""`--run`: load a small model, feed it a repeated random sequence, and score every head for the three classic
patterns: previous-token heads (attend to i-1), induction heads (attend to the token after the previous occurrence
of the current token, i-L+1 on a sequence repeated with period L), and attention sinks (attend to position 0)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from apps.detective.headers import DetectiveError
from apps.detective.report import Report

MAX_RUN_PARAMS = 1_500_000_000  # beyond this a CPU forward pass is minutes and many GB
THRESHOLDS = {"previous_token": 0.4, "induction": 0.3, "sink": 0.5}


class HeadScore(BaseModel):
    layer: int
    head: int
    previous_token: float = Field(description="Mean attention from i to i-1")
    induction: float = Field(description="Mean attention from i to i-L+1 in the repeated half")
    sink: float = Field(description="Mean attention to position 0")


class AttentionAnalysis(BaseModel):
    period: int = Field(description="Length L of the random block that is repeated")
    tokens: int
    heads: list[HeadScore]
    previous_token_heads: list[str] = Field(description="layer.head above the threshold, best first")
    induction_heads: list[str]
    sink_heads: list[str]
    maps: list[str] = Field(default_factory=list, description="PNG files written (with --maps)")

    def summary(self) -> str:
        fmt = lambda xs: ", ".join(xs[:8]) or "none"  # noqa: E731
        return (f"attention run ({self.tokens} tokens, period {self.period}): previous-token heads: "
                f"{fmt(self.previous_token_heads)}; induction heads: {fmt(self.induction_heads)}; "
                f"sinks: {fmt(self.sink_heads)}")


def score_heads(attentions: list[Any], period: int) -> list[HeadScore]:
    """attentions: per layer an array [heads, T, T] (rows sum to 1). Pure numpy, so it is testable exactly."""
    import numpy as np

    out = []
    for layer, a in enumerate(attentions):
        a = np.asarray(a, dtype=np.float64)
        t = a.shape[-1]
        i = np.arange(1, t)
        j = np.arange(period + 1, t)
        for h in range(a.shape[0]):
            out.append(HeadScore(layer=layer, head=h, previous_token=round(float(a[h, i, i - 1].mean()), 4),
                                 induction=round(float(a[h, j, j - period + 1].mean()), 4) if len(j) else 0.0,
                                 sink=round(float(a[h, i, 0].mean()), 4)))
    return out


def summarize(scores: list[HeadScore], period: int, tokens: int) -> AttentionAnalysis:
    def pick(kind: str) -> list[str]:
        ranked = sorted(scores, key=lambda s: -getattr(s, kind))
        return [f"{s.layer}.{s.head}" for s in ranked if getattr(s, kind) >= THRESHOLDS[kind]]

    return AttentionAnalysis(period=period, tokens=tokens, heads=scores, previous_token_heads=pick("previous_token"),
                             induction_heads=pick("induction"), sink_heads=pick("sink"))


def _load(path: Path, report: Report):  # type: ignore[no-untyped-def]
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # --json must print one document; progress bars are noise on stderr

    folder = path if path.is_dir() else path.parent
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise DetectiveError("--run needs the model's config.json to build it (shapes alone leave gaps)")
    raw = json.loads(cfg_path.read_text())
    raw.pop("architectures", None)
    model_type = raw.pop("model_type", None) or report.family
    # A hidden or renamed type: build the nearest family's class from the same keys.
    cfg = AutoConfig.for_model(model_type if model_type in _known_types() else report.family, **raw)
    cfg._attn_implementation = "eager"  # attention weights are only returned by the eager kernel
    auto = AutoModel if report.family == "bert" else AutoModelForCausalLM
    try:
        return auto.from_pretrained(folder, config=cfg, attn_implementation="eager"), cfg
    except Exception as e:  # a model transformers cannot build is the user's input, not our crash
        raise DetectiveError(f"--run could not load the model: {type(e).__name__}: {str(e).splitlines()[0][:200]}")


def _known_types() -> set[str]:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return set(CONFIG_MAPPING_NAMES)


def analyze_attention(path: str, report: Report, maps_dir: str | None = None, period: int = 24,
                      seed: int = 0, max_params: int = MAX_RUN_PARAMS) -> AttentionAnalysis:
    if report.format != "safetensors":
        raise DetectiveError("--run supports safetensors models (a GGUF would have to be dequantised first)")
    if report.params_total > max_params:
        raise DetectiveError(f"--run is limited to {max_params:,} parameters on CPU; this model has "
                             f"{report.params_total:,}")
    import torch

    model, cfg = _load(Path(path).expanduser(), report)
    model.eval()
    vocab = int(report.vocab_size or getattr(cfg, "vocab_size", 1000))
    gen = torch.Generator().manual_seed(seed)
    block = torch.randint(min(10, vocab - 1), vocab, (1, period), generator=gen)
    ids = torch.cat([block, block], dim=1)
    with torch.no_grad():
        out = model(input_ids=ids, output_attentions=True)
    atts = [a[0].float().numpy() for a in out.attentions if a is not None]
    if not atts:
        raise DetectiveError("--run: this model's attention implementation returns no attention weights")
    result = summarize(score_heads(atts, period), period, ids.shape[1])
    if maps_dir:
        result.maps = write_maps(atts, result, Path(maps_dir))
    return result


def attention_images(atts: list[Any], result: AttentionAnalysis, limit: int = 6) -> list[tuple[str, Any]]:
    """(caption, PIL image) for the strongest head of each kind and a few more: a white-hot heat map."""
    import numpy as np
    from PIL import Image

    wanted: list[tuple[str, str]] = []
    for kind, heads in (("previous-token", result.previous_token_heads), ("induction", result.induction_heads),
                        ("sink", result.sink_heads)):
        wanted += [(f"{kind} head {h}", h) for h in heads[:2]]
    if not wanted:
        wanted = [(f"head {s.layer}.{s.head}", f"{s.layer}.{s.head}") for s in result.heads[:limit]]
    images = []
    for caption, lh in wanted[:limit]:
        layer, head = (int(x) for x in lh.split("."))
        a = np.asarray(atts[layer][head], dtype=np.float64)
        a = (255 * a / max(a.max(), 1e-9)).astype(np.uint8)
        img = Image.fromarray(a, mode="L").resize((a.shape[1] * 6, a.shape[0] * 6), Image.NEAREST)
        images.append((caption, img))
    return images


def write_maps(atts: list[Any], result: AttentionAnalysis, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for caption, img in attention_images(atts, result):
        p = folder / (caption.replace(" ", "_").replace(".", "-") + ".png")
        img.save(p)
        paths.append(str(p))
    return paths
