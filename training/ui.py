"""The Training tab: launch a run as a Ray job, watch its loss curves and samples live, browse past runs.

A run writes `metrics.jsonl` (one row per step; eval rows carry train_loss, val_loss and a sample) in its run dir
under `training.runs_dir`; the tab polls that file, so it works the same for runs started here, from the CLI, or
with `ray job submit`. Jobs go through Ray's job API on the dashboard port, with the cluster's auth token.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

from training.ray_trainer import read_metrics

JOB_PREFIX = "conductor-train-"


def runs_dir_of(config) -> Path:
    from cluster.config import expand_path

    return expand_path(config.training.runs_dir)


def ray_auth_headers() -> dict[str, str]:
    """Ray 2.60 token auth: the token comes from RAY_AUTH_TOKEN or ~/.ray/auth_token (written by `ray start`)."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")).expanduser()
    if not token and path.is_file():
        token = path.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def build_entrypoint(preset: str, workers: int, overrides_text: str, runs_dir: Path, name: str) -> str:
    """Validate like the CLI does (so a typo fails here, not in a job) and return the job's shell command."""
    from training.config import apply_overrides, fit_to_workers, preset as get_preset

    overrides = [line.strip() for line in (overrides_text or "").splitlines() if line.strip()]
    cfg = apply_overrides(get_preset(preset), overrides)  # raises ConfigError naming the problem
    cfg, _ = fit_to_workers(cfg, int(workers))
    cfg.validate(int(workers))
    args = [sys.executable, "-m", "cluster.cli", "train", "--preset", preset, "--workers", str(int(workers)),
            "--runs-dir", str(runs_dir), "--name", name]
    for o in overrides:
        args += ["--set", o]
    return shlex.join(args)


def submit(entrypoint: str, name: str, dashboard: str) -> str:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(dashboard, headers=ray_auth_headers())
    return client.submit_job(entrypoint=entrypoint, submission_id=JOB_PREFIX + name)


def job_status(name: str, dashboard: str) -> str:
    try:
        from ray.job_submission import JobSubmissionClient

        return str(JobSubmissionClient(dashboard, headers=ray_auth_headers()).get_job_status(JOB_PREFIX + name))
    except Exception:  # noqa: BLE001 - a run started from the CLI has no job; the dashboard may be down
        return "-"


def list_runs(runs_dir: Path) -> list[dict]:
    """Past runs, newest first: name, iterations, last losses, latest checkpoint."""
    if not runs_dir.is_dir():
        return []
    out = []
    for d in sorted((p for p in runs_dir.iterdir() if (p / "metrics.jsonl").is_file()),
                    key=lambda p: (p / "metrics.jsonl").stat().st_mtime, reverse=True):
        rows = read_metrics(d)
        evals = [r for r in rows if "val_loss" in r]
        ckpts = sorted(c for c in d.glob("checkpoint_*") if (c / "state.pt").is_file())
        out.append({"run": d.name, "iters": rows[-1]["iter"] if rows else 0,
                    "loss": round(rows[-1]["loss"], 4) if rows else None,
                    "val_loss": round(evals[-1]["val_loss"], 4) if evals else None,
                    "checkpoint": str(ckpts[-1]) if ckpts else ""})
    return out


def curves(run_dir: Path, rows: list[dict] | None = None):
    """Long-format frame for a LinePlot: iter, loss, series (train = per step, val = at each eval)."""
    import pandas as pd

    rows = read_metrics(run_dir) if rows is None else rows
    points = [{"iter": r["iter"], "loss": r["loss"], "series": "train"} for r in rows if "loss" in r]
    points += [{"iter": r["iter"], "loss": r["val_loss"], "series": "val"} for r in rows if "val_loss" in r]
    return pd.DataFrame(points or [{"iter": 0, "loss": None, "series": "train"}])


def progress_markdown(run_dir: Path, rows: list[dict] | None = None) -> str:
    """The console bar's facts for the tab: iteration of total, rate, ETA from the recent steps."""
    rows = [r for r in (read_metrics(run_dir) if rows is None else rows) if "dt" in r]
    if not rows:
        return "_Waiting for the first step._"
    last, total = rows[-1], int(rows[-1].get("max_iters") or rows[-1]["iter"])
    recent = sorted(r["dt"] for r in rows[-20:])
    eta = (total - last["iter"]) * recent[len(recent) // 2]
    done = last["iter"] >= total
    return (f"**{'done' if done else 'training'}: iter {last['iter']} / {total}** ({100 * last['iter'] / total:.0f}%)"
            f" · {last.get('tokens_per_s', 0):,.0f} tokens/s" + ("" if done else f" · ETA {eta:.0f} s"))


def samples_markdown(run_dir: Path, rows: list[dict] | None = None) -> str:
    evals = [r for r in (read_metrics(run_dir) if rows is None else rows) if r.get("sample")]
    if not evals:
        return "_No samples yet: one is written at each eval._"
    parts = [f"**iter {r['iter']}** (val loss {r['val_loss']:.4f})\n```\n{r['sample']}\n```" for r in reversed(evals)]
    return "\n\n".join(parts[:5])


def build_tab(ctx) -> None:
    import gradio as gr

    from training.config import PRESETS

    runs_dir = runs_dir_of(ctx.config)
    dashboard = f"http://127.0.0.1:{ctx.config.ray.dashboard_port}"
    gr.Markdown("Train the from-scratch transformer with Ray Train (DDP). Runs are kept under "
                f"`{runs_dir}`; export one with `conductor export CHECKPOINT OUT_DIR` to chat with it.")
    with gr.Row():
        preset = gr.Dropdown(PRESETS, value="debug", label="Preset")
        workers = gr.Slider(1, 8, value=1, step=1, label="Workers")
        overrides = gr.Textbox(label="Overrides (one FIELD=VALUE per line)", lines=3, placeholder="max_iters=200")
    launch = gr.Button("Launch as a Ray job", variant="primary")
    status = gr.Markdown()
    run_pick = gr.Dropdown([r["run"] for r in list_runs(runs_dir)], label="Run", allow_custom_value=True)
    plot = gr.LinePlot(x="iter", y="loss", color="series", title="Loss", height=300)
    samples = gr.Markdown()
    runs_table = gr.Dataframe(headers=["run", "iters", "loss", "val_loss", "checkpoint"], label="Past runs")

    submitted: set[str] = set()  # runs launched from this tab: only those have a Ray job to ask about

    def on_launch(p, w, o):
        name = f"{p}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            entry = build_entrypoint(p, w, o, runs_dir, name)
        except ValueError as e:
            return f"**Not launched:** {e}", gr.update()
        try:
            job = submit(entry, name, dashboard)
        except Exception as e:  # noqa: BLE001 - cluster down or auth refused: say so in the tab
            return f"**Could not submit to Ray at {dashboard}:** {type(e).__name__}: {e}", gr.update()
        submitted.add(name)
        return f"Submitted job `{job}`: run `{name}`", gr.update(value=name, choices=[name] + [
            r["run"] for r in list_runs(runs_dir)])

    def refresh(name):
        table = [[r[k] for k in ("run", "iters", "loss", "val_loss", "checkpoint")] for r in list_runs(runs_dir)]
        if not name:
            return gr.update(), "", table
        run_dir = runs_dir / name
        rows = read_metrics(run_dir)  # once per tick, for all three views
        job = f"job: {job_status(name, dashboard)}\n\n" if name in submitted else ""
        text = job + progress_markdown(run_dir, rows) + "\n\n" + samples_markdown(run_dir, rows)
        return curves(run_dir, rows), text, table

    launch.click(on_launch, [preset, workers, overrides], [status, run_pick])
    run_pick.change(refresh, [run_pick], [plot, samples, runs_table])
    gr.Timer(2.0).tick(refresh, [run_pick], [plot, samples, runs_table])
