"""Ray Train DDP, in one Ray Train run (worker start dominates, so the assertions share it):
2 gloo workers reach the same parameters as one plain process on the combined batch, and a worker that dies
mid-run is replaced and the run resumes from the latest checkpoint, still ending on those parameters."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from training.config import preset
from training.worker_loop import load_state, local_reporter, run_loop
from training.ray_trainer import fit, prepare_run, read_metrics

# float32 all-reduce (gloo sums the two halves) vs one process summing micro-batches: rounding only.
PARAM_ATOL = 2e-5


@pytest.mark.slow
def test_two_worker_ddp_with_a_worker_failure_matches_one_process(ray_cluster, tmp_path):
    base = replace(preset("debug"), max_iters=6, eval_interval=2, gradient_accumulation_steps=2, batch_size=4,
                   max_corpus_bytes=60_000, eval_iters=1, sample_tokens=8)
    # Reference: one plain process, no Ray, both micro-batches of each step.
    ref_cfg = prepare_run(base, tmp_path / "ref", "debug", 1)
    run_loop(ref_cfg.to_dict(), 0, 1, torch.device("cpu"), tmp_path / "ref", local_reporter(tmp_path / "ref"))
    ref_state = load_state(tmp_path / "ref" / "checkpoint_000006", torch.device("cpu"))

    # Ray: 2 workers (one micro-batch each per step); rank 0 dies once at iteration 3 (after the checkpoint at 2).
    cfg = prepare_run(replace(base, crash_at_iter=3), tmp_path / "ddp", "debug", 2)
    result = fit(cfg, workers=2, run_dir=tmp_path / "ddp", max_failures=1, resources_per_worker={"CPU": 1},
                 progress=False)

    assert (tmp_path / "ddp" / "crashed.marker").is_file()  # the failure really happened
    raw_rows = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(raw_rows) == 7  # iterations 1-3, crash, resume from the checkpoint at 2: iteration 3 again, then 4-6
    rows = read_metrics(tmp_path / "ddp")
    assert [r["iter"] for r in rows] == [1, 2, 3, 4, 5, 6] and all(r["world_size"] == 2 for r in rows)
    ref_losses = [r["loss"] for r in read_metrics(tmp_path / "ref")]
    assert [r["loss"] for r in rows] == pytest.approx(ref_losses, abs=1e-4)

    summary = result.summary()
    assert summary["iters"] == 6 and summary["val_loss"] is not None and summary["tokens_per_s"] > 0
    state = load_state(result.checkpoint, torch.device("cpu"))
    assert state["iter"] == 6
    worst = max((state["model"][k] - v).abs().max().item() for k, v in ref_state["model"].items())
    assert worst <= PARAM_ATOL, f"DDP parameters differ from the 1-process run by {worst:.2e}"
