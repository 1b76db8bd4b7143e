"""The Training tab's pieces: job entrypoint validation, Ray auth headers, run listing, live curves, the tab."""

from __future__ import annotations

import shlex
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from training.config import ConfigError, preset
from training.worker_loop import local_reporter, run_loop
from training.ray_trainer import prepare_run
from training import ui


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cfg = prepare_run(replace(preset("debug"), max_iters=4, eval_interval=2, max_corpus_bytes=50_000), root / "r1",
                      "debug", 1)
    run_loop(cfg.to_dict(), 0, 1, torch.device("cpu"), root / "r1", local_reporter(root / "r1"))
    (root / "not-a-run").mkdir()
    return root


def test_entrypoint_is_validated_and_quoted(tmp_path):
    entry = ui.build_entrypoint("debug", 2, "max_iters=5\n\nsample_prompt=hello world\n", tmp_path, "r")
    args = shlex.split(entry)
    assert args[1:4] == ["-m", "cluster.cli", "train"]
    assert args[args.index("--workers") + 1] == "2"
    assert ["--set", "max_iters=5", "--set", "sample_prompt=hello world"] == args[-4:]
    with pytest.raises(ConfigError, match="unknown config field 'max_iter'"):
        ui.build_entrypoint("debug", 1, "max_iter=5", tmp_path, "r")
    with pytest.raises(ConfigError, match="unknown preset"):
        ui.build_entrypoint("nope", 1, "", tmp_path, "r")


def test_ray_auth_headers_from_env_or_token_file(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "abc")
    assert ui.ray_auth_headers() == {"Authorization": "Bearer abc"}
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    (tmp_path / "tok").write_text("xyz\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert ui.ray_auth_headers() == {"Authorization": "Bearer xyz"}
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "none"))
    assert ui.ray_auth_headers() == {}


def test_runs_curves_and_samples(runs):
    listed = ui.list_runs(runs)
    assert [r["run"] for r in listed] == ["r1"]  # a folder without metrics is not a run
    assert listed[0]["iters"] == 4 and listed[0]["val_loss"] is not None
    assert listed[0]["checkpoint"].endswith("checkpoint_000004")
    df = ui.curves(runs / "r1")
    assert sorted(df[df.series == "train"]["iter"]) == [1, 2, 3, 4]
    assert sorted(df[df.series == "val"]["iter"]) == [2, 4]
    md = ui.samples_markdown(runs / "r1")
    assert md.index("iter 4") < md.index("iter 2")  # newest first
    assert ui.list_runs(runs / "missing") == []


def test_progress_line_counts_iterations_to_the_end(runs, tmp_path):
    assert ui.progress_markdown(runs / "r1").startswith("**done: iter 4 / 4** (100%)")
    part = tmp_path / "part"
    part.mkdir()
    lines = (runs / "r1" / "metrics.jsonl").read_text().splitlines()
    (part / "metrics.jsonl").write_text(lines[0] + "\n")  # one of four steps written
    line = ui.progress_markdown(part)
    assert line.startswith("**training: iter 1 / 4** (25%)") and "tokens/s" in line and "ETA" in line
    assert ui.progress_markdown(tmp_path) == "_Waiting for the first step._"


def test_build_tab_constructs(runs):
    import gradio as gr

    from cluster.config import ConductorConfig

    config = ConductorConfig.model_validate({"training": {"runs_dir": str(runs)}})
    with gr.Blocks() as demo:
        with gr.Tab("Training"):
            ui.build_tab(SimpleNamespace(client=None, config=config))
    labels = {getattr(c, "label", None) for c in demo.blocks.values()}
    assert {"Preset", "Workers", "Run", "Past runs"} <= labels
