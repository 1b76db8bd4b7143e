"""`conductor video ingest|search|analyze|list` — JSON on stdout with --json, logs and progress on stderr.

While a Conductor server runs, every command goes through its /v1/video API (the server owns the embedded store;
nothing is loaded here); without one, the command opens the store itself.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def _config(data_dir: str | None):
    from cluster.config import load_config

    try:
        cfg = load_config()
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if data_dir:
        cfg.video.data_dir = data_dir
    return cfg


def _index(cfg):
    from apps.video.index import VideoIndex

    try:
        return VideoIndex(cfg.video)
    except RuntimeError as e:  # e.g. the embedded store is locked by a running server
        raise click.ClickException(f"cannot open the video store: {e}") from None


def _server() -> Any:
    from apps.client import running_server

    return running_server(timeout=3600)


def _call(client: Any, method: str, path: str, **kw: Any) -> Any:
    from apps.client import cli_request

    return cli_request(client, method, path, **kw)


def _upload(client: Any, paths: list[str], progress: Any) -> list[dict[str, Any]]:
    """Each file goes to the server, which ingests it before answering; the bar follows the server's progress on
    it (segments analysed), as the Video tab does."""
    from pathlib import Path

    from apps.client import cli_errors
    from apps.video.upload import ingest_with_progress

    out = []
    for i, p in enumerate(paths):
        name = Path(p).name
        with cli_errors(client):
            out.append(ingest_with_progress(client, p, lambda f, msg: progress((i + f) / len(paths),
                                                                               f"{name}: {msg}")))
        progress((i + 1) / len(paths), name)
    return out


def _emit(doc: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(doc, indent=2) if as_json else text)


def _ingest(index, paths: list[str], ray_mode: bool, workers: int, address: str | None, force: bool, progress: Any):
    from apps.video.decode import DecodeError
    from apps.video.probe import ProbeError

    try:
        return index.ingest(paths, mode="ray" if ray_mode else "local", workers=workers, address=address,
                            progress=progress, force=force)
    except (ProbeError, DecodeError) as e:
        raise click.ClickException(str(e)) from None


@click.group()
def video() -> None:
    """Video analysis: ingest videos, search moments by speech, on-screen text or visuals, analyze one file."""


@video.command()
@click.argument("target")
@click.option("--ray", "ray_mode", is_flag=True, help="Run the Ray Data pipeline (actor pools) instead of in-process.")
@click.option("--workers", default=2, show_default=True, help="Ray Data actor-pool size per model stage.")
@click.option("--address", default=None, help="Ray cluster address (e.g. auto); default starts a local one.")
@click.option("--force", is_flag=True, help="Re-ingest files already in the library.")
@click.option("--data-dir", default=None, help="Override video.data_dir.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def ingest(target: str, ray_mode: bool, workers: int, address: str | None, force: bool, data_dir: str | None,
           as_json: bool) -> None:
    """Ingest FILE_OR_FOLDER into the video library."""
    from apps.video.index import expand_inputs
    from apps.video.probe import ProbeError

    try:
        paths = expand_inputs(target)
    except ProbeError as e:
        raise click.ClickException(str(e)) from None
    from cluster.progress import ConsoleProgress

    client = None if data_dir else _server()
    if client is not None:
        with client, ConsoleProgress("video ingest", unit="%") as bar:
            out = _upload(client, paths, bar.fraction)
    else:
        index = _index(_config(data_dir))
        try:
            with ConsoleProgress("video ingest", unit="%") as bar:
                recs = _ingest(index, paths, ray_mode, workers, address, force, bar.fraction)
        finally:
            index.close()
        out = [{"video": r["video"], "name": r["name"], "duration": r["duration"], "segments": len(r["scenes"])}
               for r in recs]
    _emit(out, as_json, "\n".join(f"{r['video']}  {r['name']}  {r['duration']:.1f}s  {r['segments']} segments"
                                  for r in out))


@video.command()
@click.argument("query")
@click.option("--video", "video_id", default=None, help="Only this video id.")
@click.option("-k", "--top", default=5, show_default=True, type=click.IntRange(1, 100))
@click.option("--data-dir", default=None, help="Override video.data_dir.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (a list of moments).")
def search(query: str, video_id: str | None, top: int, data_dir: str | None, as_json: bool) -> None:
    """Find moments matching QUERY (speech, on-screen text, visuals)."""
    if not query.strip():
        raise click.UsageError("QUERY is empty")
    client = None if data_dir else _server()
    if client is not None:
        with client:
            body = {"query": query, "k": top, **({"video": video_id} if video_id else {})}
            hits = _call(client, "POST", "/v1/video/search", json=body)["data"]
    else:
        index = _index(_config(data_dir))
        try:
            if video_id and index.record(video_id) is None:
                raise click.ClickException(f"unknown video id {video_id!r} (see `conductor video list`)")
            hits = index.search(query, video_id, top)
        finally:
            index.close()
    _emit(hits, as_json, "\n".join(f"{h['score']:.3f}  {h['name']}  {h['start']:.2f}-{h['end']:.2f}s  "
                                   f"[{','.join(h['why']) or '-'}]  {(h['transcript'] or h['ocr'])[:60]}"
                                   for h in hits) or "no matches")


@video.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--llm/--no-llm", default=True, help="Ask the gateway's LLM for the summary (falls back if absent).")
@click.option("--base-url", default=None, help="Gateway URL (default CONDUCTOR_BASE_URL or http://127.0.0.1:8000).")
@click.option("--model", default=None, help="Chat model id for the summary.")
@click.option("--ray", "ray_mode", is_flag=True, help="Ingest with the Ray Data pipeline.")
@click.option("--data-dir", default=None, help="Override video.data_dir.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def analyze(file: str, llm: bool, base_url: str | None, model: str | None, ray_mode: bool, data_dir: str | None,
            as_json: bool) -> None:
    """Analyze FILE: scenes, key moments, transcript and a summary."""
    from apps.video.analyze import analysis

    cfg = _config(data_dir)
    from cluster.progress import ConsoleProgress

    server = None if data_dir else _server()
    if server is not None:
        with server:
            with ConsoleProgress("upload", unit="video") as bar:
                vid = _upload(server, [file], bar.count)[0]["video"]
            doc = _call(server, "GET", f"/v1/video/videos/{vid}", params={"summary": str(llm).lower()})
        _emit(doc, as_json, _analysis_text(doc))
        return
    index = _index(cfg)
    try:
        with ConsoleProgress("video ingest", unit="%") as bar:
            rec = _ingest(index, [file], ray_mode, 2, None, False, bar.fraction)[0]
    finally:
        index.close()
    client = None
    if llm:
        from apps.client import ConductorClient, cli_api_key, cli_base_url

        client = ConductorClient(cli_base_url(base_url), cli_api_key(), timeout=60)
    doc = analysis(rec, client, model or cfg.video.chat_model or cfg.default_model)
    _emit(doc, as_json, _analysis_text(doc))


def _analysis_text(doc: dict[str, Any]) -> str:
    text = [f"{doc['name']}: {doc['duration']:.1f}s, {len(doc['scenes'])} scenes", f"summary ({doc['summary_source']}):",
            f"  {doc['summary']}", "key moments:"] + [f"  {m['t']:7.2f}s  {m['kind']:12s} {m['label']}"
                                                     for m in doc["key_moments"]]
    return "\n".join(text)


@video.command(name="list")
@click.option("--data-dir", default=None, help="Override video.data_dir.")
@click.option("--json", "as_json", is_flag=True)
def list_videos(data_dir: str | None, as_json: bool) -> None:
    """Videos in the library."""
    client = None if data_dir else _server()
    if client is not None:
        with client:
            vids = _call(client, "GET", "/v1/video/videos")["data"]
    else:
        index = _index(_config(data_dir))
        try:
            vids = index.videos()
        finally:
            index.close()
    _emit(vids, as_json, "\n".join(f"{v['video']}  {v['name']}  {v['duration']:.1f}s" for v in vids) or "empty")


if __name__ == "__main__":
    sys.exit(video())
