"""`conductor detect PATH [--json] [--context N] [--run]`: what a model is, from its headers."""

from __future__ import annotations

import json

import click


@click.command("detect")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--context", "context_length", type=click.IntRange(1, 10**8), default=None,
              help="Context length for the KV-cache estimate (default 4096).")
@click.option("--run", "run_attention", is_flag=True,
              help="Also load the model (small safetensors models only) and find previous-token heads, induction "
                   "heads and attention sinks.")
@click.option("--maps", "maps_dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="With --run: write attention-map PNGs into this folder.")
def detect(path: str, as_json: bool, context_length: int | None, run_attention: bool, maps_dir: str | None) -> None:
    """Reverse-engineer the model at PATH (HF folder, .safetensors or .gguf) without loading its weights."""
    from apps.detective import DetectiveError, inspect_model

    if maps_dir and not run_attention:
        raise click.UsageError("--maps needs --run (the maps come from running the model)")
    try:
        report = inspect_model(path, context_length=context_length)
        analysis = None
        if run_attention:
            from apps.detective.attention import analyze_attention

            analysis = analyze_attention(path, report, maps_dir=maps_dir)
    except DetectiveError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:  # permissions, unreadable disks: still one line
        raise click.ClickException(f"{path}: {e.strerror or e}") from None
    if as_json:
        data = report.model_dump()
        if analysis is not None:
            data["attention_analysis"] = analysis.model_dump()
        click.echo(json.dumps(data))
        return
    from apps.detective.card import text_card

    click.echo(text_card(report))
    if analysis is not None:
        click.echo(analysis.summary())
