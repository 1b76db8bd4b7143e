"""Training benchmarks (CPU): Ray Train's overhead and its 2-worker scaling.

1. Conductor's trainer with 1 Ray worker vs a plain single-process PyTorch loop over the same model and the same
   batches (tokens/s of a 20th-percentile step, see _fast; one thread each). Goal >= 0.9x.
2. 2 Ray workers vs 1 Ray worker (DDP over gloo, one thread per worker), same global batch, same machine.
Worker start-up (tens of seconds) is reported in the notes, not in tokens/s: it is paid once per run.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def _config(quick: bool):
    from training.config import preset

    # ~1M params, 1k tokens a step: real compute per step, yet minutes on a shared 2-core machine.
    return replace(preset("debug"), n_layer=4, n_head=4, num_kv_heads=2, n_embd=128, block_size=64, batch_size=8,
                   gradient_accumulation_steps=2, max_iters=15 if quick else 40, eval_interval=1000,
                   eval_iters=1, warmup_iters=2, sample_tokens=4, max_corpus_bytes=400_000)


def plain_loop(cfg, run_dir: Path) -> float:
    """The baseline: model, AdamW, the same deterministic batches; nothing else. Returns steady tokens/s."""
    import torch

    from training.data import TokenData
    from training.worker_loop import lr_at
    from training.model import GPT

    torch.manual_seed(cfg.seed)
    model = GPT(cfg.model_config())
    opt = model.configure_optimizer(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), "cpu")
    data = TokenData(run_dir / "data")
    n = cfg.batch_size * cfg.gradient_accumulation_steps
    times = []
    for it in range(cfg.max_iters):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, it)
        for m in range(cfg.gradient_accumulation_steps):
            x, y = data.batch("train", it, cfg.seed, n, cfg.block_size,
                              slice(m * cfg.batch_size, (m + 1) * cfg.batch_size))
            _, loss = model(x, y)
            (loss / cfg.gradient_accumulation_steps).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        times.append(time.perf_counter() - t0)
    return n * cfg.block_size / _fast(times[1:])


def _ray_run(cfg, root: Path, name: str, workers: int, cpus: float):
    from training.ray_trainer import fit, prepare_run

    run = root / name
    cfg = prepare_run(cfg, run, "debug", workers)
    t0 = time.time()
    res = fit(cfg, workers=workers, run_dir=run, resources_per_worker={"CPU": cpus}, progress=False)
    times = [r["dt"] for r in res.history[1:]]
    tokens = cfg.batch_size * cfg.gradient_accumulation_steps * cfg.block_size
    return tokens / _fast(times), time.time() - t0


def _fast(times: list[float]) -> float:
    """The 20th-percentile step time. The benchmark machine is shared: other jobs stall random steps by seconds,
    and means or even medians then measure the neighbours. Both sides use the same statistic."""
    return statistics.quantiles(times, n=5)[0]


def run(quick: bool = False) -> list[dict]:
    import ray
    import torch

    from training.ray_trainer import prepare_run

    cores = os.cpu_count() or 2
    cfg = _config(quick)
    started = False
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=max(4, cores), include_dashboard=False, log_to_driver=False)
        started = True
    try:
        with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
            root = Path(tmp)
            base_cfg = prepare_run(cfg, root / "plain", "debug", 1)
            # One thread per worker everywhere: for a model this size a second intra-op thread on a shared 2-core
            # box costs more than it gives (measured), and it keeps the 2-vs-1 comparison about DDP alone.
            torch.set_num_threads(1)
            plain_before = plain_loop(base_cfg, root / "plain")
            one, one_wall = _ray_run(cfg, root, "ray1", 1, 1.0)
            plain_after = plain_loop(base_cfg, root / "plain")  # twice, around the Ray run: the box is shared
            two, two_wall = _ray_run(cfg, root, "ray2", 2, 1.0)
    finally:
        if started:
            ray.shutdown()
    plain = (plain_before + plain_after) / 2
    load = "load average %.1f/%.1f/%.1f at the end" % os.getloadavg()
    n_params = sum(p.numel() for p in __import__("training.model", fromlist=["GPT"]).GPT(
        base_cfg.model_config()).parameters())
    shape = (f"{n_params / 1e6:.1f}M params, global batch {cfg.batch_size * cfg.gradient_accumulation_steps}x"
             f"{cfg.block_size} tokens, {cfg.max_iters} steps")
    return [
        {"name": "train: 1 Ray worker vs plain PyTorch loop", "conductor": round(one, 1), "baseline": round(plain, 1),
         "unit": "tokens/s", "higher_is_better": True, "goal": ">= 0.9x",
         "notes": f"{shape}; 1 thread each; plain loop {plain_before:.0f} before / {plain_after:.0f} after the Ray run; "
                  f"Ray fit() wall {one_wall:.0f} s incl. worker start; 20th-percentile step; {load}"},
        {"name": "train: 2 Ray workers (DDP, gloo) vs 1 Ray worker", "conductor": round(two, 1),
         "baseline": round(one, 1), "unit": "tokens/s", "higher_is_better": True,
         "goal": "report honestly (2 cores)",
         "notes": f"{shape}; 1 thread per worker on a {cores}-core machine; fit() wall {two_wall:.0f} s; "
                  f"20th-percentile step; {load}"},
    ]
