"""Distributed training with Ray Train: `TorchTrainer` runs `training.worker_loop.run_loop` on N workers (DDP).

gloo on CPU, NCCL on GPU. Checkpoints are reported to Ray Train (`storage_path` = the runs dir), which keeps them
and hands the latest back after a worker dies (`FailureConfig`), so the run resumes where it left off; a new run
can also start from any checkpoint (`resume`). Everything that can be wrong with the input is checked here, in the
driver, before any worker starts.
"""

from __future__ import annotations

import os

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from training.config import TrainConfig
from training.worker_loop import STATE_FILE


@dataclass
class RunResult:
    run_dir: Path
    checkpoint: Path | None
    metrics: dict
    history: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0

    def summary(self) -> dict:
        steps = [r for r in self.history if "tokens_per_s" in r]
        steady = steps[1:] or steps  # the first step pays for warm-up (allocations, kernel selection)
        tps = sum(r["tokens_per_s"] for r in steady) / len(steady) if steady else None
        last_eval = next((r for r in reversed(self.history) if "val_loss" in r), {})
        return {
            "train_loss": last_eval.get("train_loss", self.metrics.get("loss")),
            "val_loss": last_eval.get("val_loss"),
            "last_step_loss": self.metrics.get("loss"),
            "tokens_per_s": tps,
            "mfu": self.metrics.get("mfu"),
            "iters": self.metrics.get("iter"),
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "run_dir": str(self.run_dir),
            "elapsed_s": round(self.elapsed_s, 2),
            "sample": last_eval.get("sample"),
        }


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl rows; after a restart an iteration can appear twice, the later row wins."""
    f = Path(run_dir) / "metrics.jsonl"
    if not f.is_file():
        return []
    by_iter: dict[int, dict] = {}
    for line in f.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written right now
        by_iter[row.get("iter", len(by_iter))] = row
    return [by_iter[k] for k in sorted(by_iter)]


def validate_checkpoint(path: str | Path) -> Path:
    """A checkpoint dir with state.pt, config.json, tokenizer.json, and a state that torch can read."""
    p = Path(path).expanduser()
    for name in (STATE_FILE, "config.json", "tokenizer.json"):
        if not (p / name).is_file():
            raise ValueError(f"not a Conductor checkpoint: {p} has no {name}")
    try:
        json.loads((p / "config.json").read_text())
        import torch

        torch.load(p / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means the files are damaged
        raise ValueError(f"corrupt checkpoint {p}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    return p


def prepare_run(cfg: TrainConfig, run_dir: Path, preset_name: str, world: int) -> TrainConfig:
    """Validate, tokenize the corpus into run_dir/data and fix vocab_size. Raises ValueError subclasses."""
    from dataclasses import replace

    from training.config import fit_to_workers
    from training.data import prepare, resolve_corpus

    cfg, note = fit_to_workers(cfg, world)
    if note:
        print(f"note: {note}", file=sys.stderr)
    cfg.validate(world)
    data_dir = run_dir / "data"
    if (data_dir / "meta.json").is_file():  # resuming a run: reuse its tokenizer and tokens
        meta = json.loads((data_dir / "meta.json").read_text())
    else:
        corpus = resolve_corpus(cfg.corpus, preset_name)
        meta = prepare(corpus, data_dir, cfg.tokenizer, cfg.bpe_vocab_size, cfg.max_corpus_bytes, cfg.block_size)
    cfg = replace(cfg, vocab_size=meta["vocab_size"])
    cfg.validate(world)
    return cfg


def ray_worker_loop(config: dict) -> None:
    """Runs on each Ray Train worker."""
    import ray.train
    import ray.train.torch

    from cluster.memory import keep_freed_memory
    from training.worker_loop import run_loop

    keep_freed_memory()  # this process is the worker's own: its allocator serves the training steps alone
    if config.get("threads"):
        import torch

        torch.set_num_threads(config["threads"])  # the cores this worker may use (see worker_threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    resume = None
    ckpt = ray.train.get_checkpoint()  # set after a worker failure: the latest reported checkpoint
    if ckpt is not None:
        resume = Path(ckpt.path)  # local storage_path: readable in place
    elif config.get("resume"):
        resume = Path(config["resume"])

    def report(metrics: dict, ckpt_dir: Path | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(str(ckpt_dir)) if ckpt_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    run_loop(config["train"], rank, world, device, Path(config["run_dir"]), report, resume=resume)


def ensure_ray(address: str | None = None) -> None:
    """Connect to a running cluster (`conductor up`, a Ray job) or start a local one for this process."""
    import ray

    if ray.is_initialized():
        return
    if address == "local":  # always a fresh cluster owned by this process (tests, isolated runs)
        ray.init(address="local", include_dashboard=False, log_to_driver=True)
        return
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    try:
        ray.init(address="auto", log_to_driver=True)  # inside a Ray job or beside `conductor up`
    except (ConnectionError, RuntimeError):
        ray.init(include_dashboard=False, log_to_driver=True)


def worker_threads(workers: int) -> int:
    """torch threads per worker: the machine's cores shared by the workers. Ray's logical CPUs are a scheduling
    currency (the head advertises more than there are cores so Serve and Train fit side by side), and Ray sets
    OMP_NUM_THREADS from them, which would leave a 1-CPU worker with one thread on a 2-core machine."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def fit(cfg: TrainConfig, *, workers: int, run_dir: Path, use_gpu: bool = False, resume: Path | None = None,
        max_failures: int = 1, resources_per_worker: dict | None = None, progress: bool = True,
        threads_per_worker: int | None = None) -> RunResult:
    """Run a prepared config (see prepare_run) on Ray Train and return the result."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    run_dir = Path(run_dir).resolve()
    trainer = TorchTrainer(
        ray_worker_loop,
        train_loop_config={"train": cfg.to_dict(), "run_dir": str(run_dir), "resume": str(resume) if resume else None,
                           "threads": threads_per_worker or worker_threads(workers)},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources_per_worker),
        run_config=RunConfig(
            name=run_dir.name, storage_path=str(run_dir.parent),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=3),
        ),
    )
    t0 = time.time()
    stop = threading.Event()
    bar = threading.Thread(target=_progress, args=(run_dir, cfg.max_iters, stop), daemon=True) if progress else None
    if bar:
        bar.start()
    try:
        result = trainer.fit()
    finally:
        stop.set()
        if bar:
            bar.join(timeout=5)
    history = read_metrics(run_dir)
    ckpt = Path(result.checkpoint.path) if result.checkpoint else None
    return RunResult(run_dir, ckpt, history[-1] if history else dict(result.metrics or {}), history, time.time() - t0)


def _progress(run_dir: Path, total: int, stop: threading.Event) -> None:
    """The console progress bar (cluster/progress.py, as ingestion's) fed by metrics.jsonl: works the same for local
    runs and Ray jobs."""
    from cluster.progress import ConsoleProgress

    with ConsoleProgress("train", unit="it") as bar:
        while not stop.is_set():
            rows = read_metrics(run_dir)
            if rows:
                last = rows[-1]
                post = f"loss={last.get('loss', 0):.4f}, tok/s={last.get('tokens_per_s', 0):.0f}"
                val = next((r["val_loss"] for r in reversed(rows) if "val_loss" in r), None)
                if val is not None:
                    post += f", val={val:.4f}"
                bar.count(int(last.get("iter", 0)), total, post)
            stop.wait(1.0)
