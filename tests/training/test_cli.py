"""`conductor train | sample | export`: bad input fails in one line before any worker starts; one real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cluster.cli import cli

REPO = Path(__file__).resolve().parents[2]


def _invoke(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("args, message", [
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--set", "n_layers=2"], "unknown config field 'n_layers'"),
    (["--set", "n_layer=two"], "n_layer expects int, got 'two'"),
    (["--set", "learning_rate=fast"], "learning_rate expects float"),
    (["--set", "n_head=3"], "n_embd (64) must be divisible by n_head (3)"),
    (["--set", "num_kv_heads=3"], "n_head (4) must be divisible by num_kv_heads (3)"),
    (["--set", "n_layer"], "--set expects key=value"),
    (["--set", "batch_size=0"], "batch_size must be >= 1"),
])
def test_train_rejects_bad_config_in_one_line(args, message, tmp_path):
    res = _invoke("train", "--runs-dir", str(tmp_path), *args)
    assert res.exit_code == 1, res.output
    assert message in res.output
    assert res.output.strip().count("\n") == 0 and "Traceback" not in res.output
    assert not any(tmp_path.iterdir())  # rejected before anything was prepared, let alone a worker


def test_train_rejects_missing_and_empty_corpus(tmp_path):
    res = _invoke("train", "--runs-dir", str(tmp_path / "runs"), "--set", f"corpus={tmp_path / 'nope'}")
    assert res.exit_code == 1 and "corpus not found" in res.output
    (tmp_path / "empty").mkdir()
    res = _invoke("train", "--runs-dir", str(tmp_path / "runs"), "--set", f"corpus={tmp_path / 'empty'}")
    assert res.exit_code == 1 and "corpus is empty" in res.output


def test_corrupt_or_missing_checkpoint_is_a_one_line_error(tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    res = _invoke("sample", str(ck))
    assert res.exit_code == 1 and "not a Conductor checkpoint" in res.output and "state.pt" in res.output
    (ck / "state.pt").write_bytes(b"\x00garbage" * 100)
    (ck / "config.json").write_text("{}")
    (ck / "tokenizer.json").write_text("{}")
    for args in (["sample", str(ck)], ["export", str(ck), str(tmp_path / "out")],
                 ["train", "--runs-dir", str(tmp_path / "runs"), "--resume", str(ck)]):
        res = _invoke(*args)
        assert res.exit_code == 1 and "corrupt checkpoint" in res.output, (args, res.output)
        assert "Traceback" not in res.output


def test_fields_lists_nanogpt_names():
    res = _invoke("train", "--fields")
    assert res.exit_code == 0
    for name in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "max_iters", "learning_rate", "dropout",
                 "gradient_accumulation_steps", "num_kv_heads"):
        assert f"{name} = " in res.output


@pytest.mark.slow
def test_real_train_then_sample_and_export(tmp_path):
    """A real `conductor train` process (its own local Ray + Ray Train worker), then sample and export."""
    exe = Path(sys.executable).parent / "conductor"
    proc = subprocess.run(
        [str(exe), "train", "--preset", "debug", "--set", "max_iters=6", "--set", "eval_interval=3",
         "--runs-dir", str(tmp_path), "--name", "cli-run", "--address", "local", "--json"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # exactly one JSON document: Ray's logs went to stderr
    for key in ("train_loss", "val_loss", "tokens_per_s", "iters", "checkpoint"):
        assert summary[key] is not None, key
    assert summary["iters"] == 6 and summary["tokens_per_s"] > 0
    ckpt = Path(summary["checkpoint"])
    assert (ckpt / "state.pt").is_file() and ckpt.parent == tmp_path / "cli-run"
    assert len([line for line in (tmp_path / "cli-run" / "metrics.jsonl").read_text().splitlines() if line]) == 6

    res = _invoke("sample", str(ckpt), "--prompt", "import ", "--max-new-tokens", "25", "--json")
    assert res.exit_code == 0, res.output
    sample = json.loads(res.stdout)["samples"][0]
    assert len(sample) == 25  # char tokenizer: one token per character

    res = _invoke("export", str(ckpt), str(tmp_path / "hf"), "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["max_abs_logit_diff"] <= 1e-4 and (tmp_path / "hf" / "model.safetensors").is_file()


def test_workers_that_cannot_fit_are_refused(ray_cluster, tmp_path):
    res = _invoke("train", "--runs-dir", str(tmp_path), "--workers", "9", "--cpus-per-worker", "1",
                  "--set", "max_corpus_bytes=20000")
    assert res.exit_code == 1, res.output
    assert "9 workers x 1.0 CPU do not fit this Ray cluster (8 CPU)" in res.output
