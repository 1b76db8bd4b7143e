"""`--run`: head scoring on exact synthetic patterns, on the real MiniLM, and end to end through the CLI."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from apps.detective import inspect_model
from apps.detective.attention import analyze_attention, score_heads, summarize
from cluster.cli import cli
from deployments import packaged


def _patterns(period: int = 8) -> list[np.ndarray]:
    t = 2 * period
    prev, uniform, induction, sink = (np.zeros((t, t)) for _ in range(4))
    for i in range(t):
        prev[i, max(i - 1, 0)] = 1
        uniform[i, : i + 1] = 1 / (i + 1)
        induction[i, i - period + 1 if i > period else i] = 1
        sink[i, 0] = 1
    return [np.stack([prev, uniform]), np.stack([induction, sink])]


def test_scores_find_each_kind_exactly():
    result = summarize(score_heads(_patterns(), 8), 8, 16)
    assert result.previous_token_heads == ["0.0"]
    assert result.induction_heads == ["1.0"]
    assert result.sink_heads == ["1.1"]
    by = {(h.layer, h.head): h for h in result.heads}
    assert by[(0, 0)].previous_token == 1.0 and by[(1, 1)].sink == 1.0 and by[(1, 0)].induction == 1.0
    assert by[(0, 1)].previous_token < 0.4  # a uniform head is none of the three


def test_minilm_has_a_real_previous_token_head(tmp_path):
    """The trained MiniLM encoder: layer 0 head 2 attends to the previous token almost exclusively."""
    path = str(packaged.minilm_dir())
    result = analyze_attention(path, inspect_model(path), maps_dir=str(tmp_path))
    assert "0.2" in result.previous_token_heads[:2]
    assert len(result.heads) == 6 * 12 and result.maps and all(p.endswith(".png") for p in result.maps)


def test_cli_run_on_hidden_identity_model(zoo, tmp_path):
    """config.json without model_type: --run rebuilds the nearest family's class from the remaining keys."""
    result = CliRunner().invoke(cli, ["detect", str(zoo("llama", hide="strip")), "--run", "--json",
                                      "--maps", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    analysis = data["attention_analysis"]
    assert data["family"] == "llama" and len(analysis["heads"]) == 3 * 6
    assert all(0 <= h["sink"] <= 1 for h in analysis["heads"]) and list(tmp_path.glob("*.png"))
