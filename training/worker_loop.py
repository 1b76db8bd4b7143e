"""The training loop one worker runs: plain PyTorch, with DDP when world_size > 1.

Ray Train calls it through `training.ray_trainer.ray_worker_loop`; tests and `training/gpu_bench.py` call `run_loop`
directly with world_size 1, so the same code is exercised with and without Ray. Every step's metrics go to
`metrics.jsonl` in the run dir (rank 0 only), which is what the progress bar and the UI's live curves read.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

from cluster.files import atomic_write_json
from training.config import TrainConfig

STATE_FILE = "state.pt"
# Peak dense bf16 FLOP/s per device used for the MFU estimate (H100 SXM; nanoGPT uses A100's 312e12).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}

# report(metrics, checkpoint_dir or None): Ray's ray.train.report, or a local copier for plain runs.
Reporter = Callable[[dict, "Path | None"], None]


def lr_at(cfg: TrainConfig, it: int) -> float:
    """Linear warmup, then cosine decay to min_lr at lr_decay_iters (nanoGPT's schedule)."""
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it >= decay_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


def peak_flops(device) -> float | None:
    import torch

    if device.type != "cuda":
        return None  # MFU on a CPU is not meaningful
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def autocast_ctx(cfg: TrainConfig, device):
    import torch

    dtype = cfg.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


def save_checkpoint(out: Path, model, optimizer, cfg: TrainConfig, it: int, data_dir: Path, extra: dict) -> Path:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iter": it,
             "torch_rng": torch.get_rng_state(), **extra}
    torch.save(state, out / STATE_FILE)
    atomic_write_json(out / "config.json", cfg.to_dict(), indent=2)
    shutil.copy(data_dir / "tokenizer.json", out / "tokenizer.json")
    return out


def load_state(ckpt_dir: Path, device) -> dict:
    import torch

    # weights_only: a checkpoint is data, never code (no arbitrary unpickling).
    return torch.load(Path(ckpt_dir) / STATE_FILE, map_location=device, weights_only=True)


def _all_mean(value: float, world: int, device) -> float:
    if world == 1:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return t.item() / world


def evaluate(model, data, cfg: TrainConfig, rank: int, world: int, device, it: int) -> dict:
    """Mean loss over eval_iters batches per split; each rank takes its share of the same sequences."""
    import torch

    model.eval()
    out = {}
    per = cfg.batch_size
    with torch.no_grad(), autocast_ctx(cfg, device):
        for split in ("train", "val"):
            losses = []
            for k in range(cfg.eval_iters):
                x, y = data.batch(split, 10_000_000 + k, cfg.seed, per * world, cfg.block_size,
                                  slice(rank * per, (rank + 1) * per))
                _, loss = model(x.to(device), y.to(device))
                losses.append(loss.item())
            out[f"{split}_loss"] = _all_mean(sum(losses) / len(losses), world, device)
    model.train()
    return out


def make_sample(model, tokenizer_path: Path, cfg: TrainConfig, device) -> str:
    import torch

    from training.data import load_tokenizer

    tok = load_tokenizer(tokenizer_path)
    ids = tok.encode(cfg.sample_prompt, add_special_tokens=False).ids or [0]
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    out = model.generate(torch.tensor([ids], device=device), cfg.sample_tokens, temperature=0.8, top_k=50,
                         generator=g)
    return tok.decode(out[0].tolist())


def _maybe_crash(cfg: TrainConfig, run_dir: Path, rank: int, it: int) -> None:
    # Fault injection: kill this worker process once (a marker file makes the restarted attempt pass).
    marker = run_dir / "crashed.marker"
    if cfg.crash_at_iter and it == cfg.crash_at_iter and rank == 0 and not marker.exists():
        marker.write_text(str(it))
        # Ray Train's controller collects reports by polling (every 2 s by default): wait past that so the crash
        # looks like a real failure some time after the last checkpoint rather than racing its registration.
        time.sleep(3.0)
        os._exit(1)


def run_loop(tc: dict, rank: int, world: int, device, run_dir: Path, report: Reporter,
             resume: Path | None = None) -> dict:
    """Train from tc (a TrainConfig dict) to max_iters; return the last metrics. Resumes from `resume` if given."""
    import torch

    from training.data import TokenData
    from training.model import GPT

    cfg = TrainConfig.from_dict(tc)
    run_dir, data_dir = Path(run_dir), Path(run_dir) / "data"
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.model_config()).to(device)
    optimizer = model.configure_optimizer(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), device.type)
    start = 0
    if resume is not None:
        state = load_state(resume, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"].cpu())
        start = int(state["iter"])
    train_model = model
    if cfg.compile:
        train_model = torch.compile(model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(train_model, device_ids=[device.index] if device.type == "cuda" else None)
    data = TokenData(data_dir)
    accum = cfg.gradient_accumulation_steps // world
    n_seqs = cfg.batch_size * cfg.gradient_accumulation_steps
    tokens_per_iter = n_seqs * cfg.block_size
    peak = peak_flops(device)
    flops_tok = model.flops_per_token()
    metrics_file = (run_dir / "metrics.jsonl").open("a") if rank == 0 else None
    last: dict = {}
    try:
        for it in range(start, cfg.max_iters):
            _maybe_crash(cfg, run_dir, rank, it)
            last = _step(train_model, model, optimizer, data, cfg, it, rank, world, accum, n_seqs, device)
            last["tokens_per_s"] = tokens_per_iter / last["dt"]
            last["max_iters"] = cfg.max_iters  # so a reader of metrics.jsonl (the UI's progress line) knows the end
            if peak:
                last["mfu"] = flops_tok * last["tokens_per_s"] / (peak * world)
            done = it + 1
            if done % cfg.eval_interval == 0 or done == cfg.max_iters:
                last.update(evaluate(model, data, cfg, rank, world, device, done))
                if rank == 0:
                    last["sample"] = make_sample(model, data_dir / "tokenizer.json", cfg, device)
            _write(metrics_file, last, done % cfg.log_interval == 0 or "val_loss" in last)
            if "val_loss" in last:
                _report_with_checkpoint(model, optimizer, cfg, done, data_dir, rank, last, report)
    finally:
        if metrics_file:
            metrics_file.close()
    return last


def _step(train_model, model, optimizer, data, cfg, it, rank, world, accum, n_seqs, device) -> dict:
    import torch

    t0 = time.perf_counter()
    lr = lr_at(cfg, it)
    for group in optimizer.param_groups:
        group["lr"] = lr
    total = 0.0
    for m in range(accum):
        j = rank * accum + m  # this micro-batch's index in the step's global batch
        x, y = data.batch("train", it, cfg.seed, n_seqs, cfg.block_size,
                          slice(j * cfg.batch_size, (j + 1) * cfg.batch_size))
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        # Skip DDP's all-reduce on all but the last micro-step: the gradients are summed locally first.
        sync = nullcontext() if (world == 1 or m == accum - 1) else train_model.no_sync()
        with sync, autocast_ctx(cfg, device):
            _, loss = train_model(x, y)
            (loss / accum).backward()
        total += loss.item()
    grad_norm = None
    if cfg.grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    loss = _all_mean(total / accum, world, device)
    return {"iter": it + 1, "loss": loss, "world_size": world, "lr": lr, "grad_norm": grad_norm, "dt": time.perf_counter() - t0,
            "time": time.time()}


def _write(f, row: dict, keep: bool) -> None:
    if f is not None and keep:
        f.write(json.dumps(row) + "\n")
        f.flush()


def _report_with_checkpoint(model, optimizer, cfg, done, data_dir, rank, last, report: Reporter) -> None:
    metrics = {k: v for k, v in last.items() if k != "sample" and v is not None}
    if rank != 0:
        report(metrics, None)  # every rank calls report (it is collective in Ray Train); rank 0 saves
        return
    with tempfile.TemporaryDirectory(prefix="conductor-ckpt-") as tmp:
        save_checkpoint(Path(tmp), model, optimizer, cfg, done, data_dir, {"metrics": metrics})
        report(metrics, Path(tmp))


def local_reporter(run_dir: Path, keep: int = 3) -> Reporter:
    """For runs without Ray: copy each checkpoint to run_dir/checkpoint_<iter> and keep the latest `keep`."""

    def report(metrics: dict, ckpt: Path | None) -> None:
        if ckpt is None:
            return
        dest = Path(run_dir) / f"checkpoint_{int(metrics['iter']):06d}"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(ckpt, dest)
        old = sorted(Path(run_dir).glob("checkpoint_*"))[:-keep]
        for d in old:
            shutil.rmtree(d, ignore_errors=True)

    return report
