"""`conductor train | sample | export` (mapped lazily from cluster/cli.py).

Every input problem (preset, field, type, shape, corpus, checkpoint) becomes a one-line ClickException before any
Ray worker starts. `--json` prints exactly one JSON document on stdout; Ray's and the progress bar's output go to
stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import click


def _training_config():
    """The `training` section of conductor.yaml (defaults when the file is missing or invalid)."""
    from cluster.config import TrainingConfig, load_config

    try:
        return load_config().training
    except ValueError:
        return TrainingConfig()


def _runs_dir(explicit: str | None, tc) -> Path:
    from cluster.config import expand_path

    return Path(explicit).expanduser() if explicit else expand_path(tc.runs_dir)


@contextlib.contextmanager
def _stdout_to_stderr(active: bool):
    """At the fd level, so Ray's log forwarding and child processes cannot write into the JSON on stdout."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@click.command("train")
@click.option("--preset", "preset_name", default="debug", show_default=True,
              help="debug | shakespeare-char | small")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 1024), help="Ray Train workers (DDP).")
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE", help="Override any config field (repeatable).")
@click.option("--gpu/--cpu", "use_gpu", default=None, help="Train on GPUs (NCCL) or CPUs (gloo); default: GPU if present.")
@click.option("--cpus-per-worker", default=None, type=click.FloatRange(0.01),
              help="Ray CPU resources each worker reserves (fractional is fine); default training.cpus_per_worker.")
@click.option("--runs-dir", default=None, help="Ray Train storage_path; default training.runs_dir from the config.")
@click.option("--name", default=None, help="Run name (a folder under the runs dir); default PRESET-TIMESTAMP.")
@click.option("--resume", default=None, help="Start from this checkpoint dir (weights, optimizer and iteration).")
@click.option("--max-failures", default=None, type=click.IntRange(0),
              help="Worker failures to recover from (restart from the latest checkpoint); default training.max_failures.")
@click.option("--address", default=None, help="Ray cluster address, or `local` for a fresh private one; default: a running cluster, else a local one.")
@click.option("--fields", "list_fields", is_flag=True, help="List every config field with its default and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def train(preset_name, workers, overrides, use_gpu, cpus_per_worker, runs_dir, name, resume, max_failures, address,
          list_fields, as_json):
    """Train the from-scratch transformer with Ray Train (DDP over --workers)."""
    from training.config import apply_overrides, describe_fields, fit_to_workers, preset

    if list_fields:
        click.echo(describe_fields())
        return
    try:
        cfg, _ = fit_to_workers(apply_overrides(preset(preset_name), overrides), workers)
        cfg.validate(workers)
        resume_path = None
        if resume:
            from training.ray_trainer import validate_checkpoint

            resume_path = validate_checkpoint(resume)
        if use_gpu is None:
            import torch

            use_gpu = torch.cuda.is_available()
        tc = _training_config()
        cpus_per_worker = cpus_per_worker or tc.cpus_per_worker
        max_failures = tc.max_failures if max_failures is None else max_failures
        run_dir = _runs_dir(runs_dir, tc) / (name or f"{preset_name}-{time.strftime('%Y%m%d-%H%M%S')}")
        from training.ray_trainer import prepare_run

        cfg = prepare_run(cfg, run_dir, preset_name, workers)
        if resume_path:
            _check_resume_compatible(cfg, resume_path)
    except ValueError as e:  # ConfigError, DataError and friends
        raise click.ClickException(str(e)) from None
    with _stdout_to_stderr(as_json):
        from training.ray_trainer import ensure_ray, fit

        ensure_ray(address)
        resources = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
        _check_capacity(workers, resources)
        try:
            result = fit(cfg, workers=workers, run_dir=run_dir, use_gpu=use_gpu, resume=resume_path,
                         max_failures=max_failures, resources_per_worker=resources, progress=True,
                         threads_per_worker=tc.threads_per_worker)
        except Exception as e:  # noqa: BLE001 - a failed run is reported in one line; details are in Ray's log
            raise click.ClickException(f"training failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
    summary = result.summary()
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"done: {summary['iters']} iters, train loss {summary['train_loss']:.4f}, val loss "
                   f"{summary['val_loss']:.4f}, {summary['tokens_per_s']:.0f} tokens/s")
        click.echo(f"checkpoint: {summary['checkpoint']}")


def _check_capacity(workers: int, per_worker: dict) -> None:
    """Ray would wait forever for workers that can never be placed; say so instead."""
    import ray

    total = ray.cluster_resources()
    for name, amount in per_worker.items():
        if total.get(name, 0) < workers * amount:
            raise click.ClickException(
                f"{workers} workers x {amount} {name} do not fit this Ray cluster ({total.get(name, 0):g} {name}); "
                f"lower --workers or --cpus-per-worker"
            )


def _check_resume_compatible(cfg, ckpt: Path) -> None:
    saved = json.loads((ckpt / "config.json").read_text())
    for key in ("n_layer", "n_head", "n_embd", "num_kv_heads", "vocab_size", "block_size", "tie_embeddings"):
        if saved.get(key) != getattr(cfg, key):
            raise ValueError(f"--resume checkpoint has {key}={saved.get(key)} but this run has {getattr(cfg, key)}")


@click.command("sample")
@click.argument("checkpoint")
@click.option("--prompt", default="\n", help="Text to continue.")
@click.option("--max-new-tokens", default=200, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--temperature", default=0.8, show_default=True, type=click.FloatRange(0), help="0 = greedy.")
@click.option("--top-k", default=50, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--num-samples", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--json", "as_json", is_flag=True)
def sample(checkpoint, prompt, max_new_tokens, temperature, top_k, seed, num_samples, as_json):
    """Generate text from a training checkpoint."""
    from training.sample import generate_text, load_checkpoint

    try:
        model, tok, _ = load_checkpoint(checkpoint)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    texts = [generate_text(model, tok, prompt, max_new_tokens, temperature, top_k, seed + i) for i in range(num_samples)]
    if as_json:
        click.echo(json.dumps({"checkpoint": checkpoint, "prompt": prompt, "samples": texts}))
    else:
        click.echo("\n---\n".join(texts))


@click.command("export")
@click.argument("checkpoint")
@click.argument("out_dir")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Load the export with transformers and compare logits with Conductor's model.")
@click.option("--json", "as_json", is_flag=True)
def export(checkpoint, out_dir, verify, as_json):
    """Write a Hugging Face Llama-format directory (config, safetensors, tokenizer, chat template)."""
    from training.export import export_hf, verify_export

    try:
        out = export_hf(checkpoint, out_dir)
        diff = verify_export(checkpoint, out) if verify else None
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps({"out_dir": str(out), "max_abs_logit_diff": diff}))
    else:
        click.echo(f"exported to {out}" + (f" (max |logit diff| vs Conductor's model: {diff:.2e})" if verify else ""))
