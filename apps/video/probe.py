"""Probe untrusted media with explicit limits before any full decode.

The probe runs FFmpeg (through PyAV) in a separate Python process with an address-space cap and a wall-clock
timeout, so a hostile file can at worst kill that process, never the caller. FFmpeg's own probing is bounded
(`probesize`, `analyzeduration`, `fpsprobesize`) so it reads a few MB at most. Every rejection is a `ProbeError`
carrying an HTTP-style status and a one-line reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel, Field

from cluster.config import VideoLimits
from deployments.limited_exec import Limits, limited_argv


class ProbeError(ValueError):
    """The file is not a video we accept. `status`: 413 too big, 415 not media, 422 media we refuse."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


class MediaInfo(BaseModel):
    container: str = Field(description="FFmpeg demuxer name(s), e.g. 'mov,mp4,m4a,3gp,3g2,mj2'.")
    bytes: int = Field(description="File size.")
    duration: float = Field(description="Seconds (container or stream duration; 0 when unknown).")
    width: int = Field(description="Video width in pixels.")
    height: int = Field(description="Video height in pixels.")
    fps: float = Field(description="Average frame rate (0 when unknown).")
    frames: int = Field(description="Frame count from the header (0 when unknown).")
    video_codec: str = Field(description="Video codec name.")
    audio_codec: str | None = Field(None, description="First audio stream's codec, None without audio.")
    audio_rate: int | None = Field(None, description="First audio stream's sample rate.")
    streams: int = Field(description="Number of streams in the container.")


def ffmpeg_options(limits: VideoLimits) -> dict[str, str]:
    """Options that bound how much FFmpeg reads and analyses while opening a file, and what it may open: the
    file itself only (no http/tcp/concat/hls reaching the network or other files) and only container formats on
    the allowlist (a playlist or concat script is refused before its demuxer runs)."""
    return {
        "protocol_whitelist": "file",
        "format_whitelist": ",".join(limits.formats),
        "probesize": str(limits.probe_bytes),
        "analyzeduration": str(int(limits.probe_duration_s * 1_000_000)),
        "fpsprobesize": "5",
        "max_streams": str(limits.max_streams + 1),
    }


def _limit_check(info: MediaInfo, limits: VideoLimits) -> None:
    if info.streams > limits.max_streams:
        raise ProbeError(f"{info.streams} streams exceeds the limit of {limits.max_streams}")
    if info.width <= 0 or info.height <= 0:
        raise ProbeError("video stream has no frame size")
    if info.width > limits.max_width or info.height > limits.max_height or \
            info.width * info.height > limits.max_pixels:
        raise ProbeError(f"frame size {info.width}x{info.height} exceeds the limit of "
                         f"{limits.max_width}x{limits.max_height} ({limits.max_pixels} pixels)")
    if info.fps > limits.max_fps:
        raise ProbeError(f"frame rate {info.fps:.1f} fps exceeds the limit of {limits.max_fps:g}")
    if info.duration > limits.max_duration_s:
        raise ProbeError(f"duration {info.duration:.0f} s exceeds the limit of {limits.max_duration_s:g} s")


def probe_in_process(path: str, limits: VideoLimits) -> MediaInfo:
    """The probe itself. Call `probe()` instead for untrusted files: this runs FFmpeg in *this* process."""
    import av
    import av.logging

    size = os.path.getsize(path)
    av.logging.set_level(av.logging.ERROR)  # FFmpeg's own log line is the most precise reason we can give
    try:
        with av.logging.Capture() as logs:
            container = av.open(path, options=ffmpeg_options(limits), timeout=limits.probe_timeout_s)
    except av.FFmpegError as e:
        why = logs[-1][2].strip() if logs else _reason(e)
        raise ProbeError(f"not a readable media file ({why})", 415) from None
    with container:
        videos = list(container.streams.video)
        if not videos:
            raise ProbeError("file has no video stream", 415)
        v, audio = videos[0], next(iter(container.streams.audio), None)
        duration = container.duration / 1_000_000 if container.duration else 0.0
        if not duration and v.duration and v.time_base:
            duration = float(v.duration * v.time_base)
        rate = v.average_rate or v.guessed_rate
        info = MediaInfo(
            container=container.format.name, bytes=size, duration=max(0.0, duration),
            width=v.codec_context.width or 0, height=v.codec_context.height or 0,
            fps=float(rate) if rate else 0.0, frames=int(v.frames or 0),
            video_codec=v.codec_context.name, streams=len(container.streams),
            audio_codec=audio.codec_context.name if audio else None,
            audio_rate=audio.codec_context.sample_rate if audio else None,
        )
    _limit_check(info, limits)
    return info


def _reason(e: Exception) -> str:
    return str(getattr(e, "strerror", None) or e)


def precheck(path: str | os.PathLike, limits: VideoLimits) -> int:
    """Cheap checks needing no FFmpeg: the file exists, is a regular file, and its size is within bounds."""
    p = Path(path)
    if not p.is_file():
        raise ProbeError(f"no such file: {p}", 400)
    size = p.stat().st_size
    if size == 0:
        raise ProbeError("file is empty", 415)
    if size > limits.max_bytes:
        raise ProbeError(f"file of {size} bytes exceeds the limit of {limits.max_bytes} bytes", 413)
    return size


def probe(path: str | os.PathLike, limits: VideoLimits | None = None) -> MediaInfo:
    """Probe in a child process capped in memory and time; raises ProbeError with a reason on any rejection."""
    limits = limits or VideoLimits()
    precheck(path, limits)
    mem = limits.worker_memory_mb * 1024 * 1024
    cmd = limited_argv([sys.executable, "-m", "apps.video.probe", str(path), limits.model_dump_json()],
                       Limits({"RLIMIT_AS": (mem, mem), "RLIMIT_CORE": (0, 0)}))
    root = str(Path(__file__).resolve().parents[2])
    from deployments.secrets import child_env

    env = child_env(PYTHONPATH=root)  # the probe parses untrusted media: it gets no credential
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=limits.probe_timeout_s, env=env, cwd=root,
                             check=False)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"probe took longer than {limits.probe_timeout_s:g} s; file rejected") from None
    try:
        result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise ProbeError(f"probe worker died (exit {out.returncode}); file rejected") from None
    if not result.get("ok"):
        raise ProbeError(result["error"], int(result.get("status", 422)))
    return MediaInfo.model_validate(result["info"])


def _main(argv: list[str]) -> int:
    path, limits = argv[0], VideoLimits.model_validate_json(argv[1])
    try:
        import av  # noqa: F401  (loading FFmpeg itself can hit the memory cap)
    except (ImportError, MemoryError):
        print(json.dumps({"ok": False, "status": 422, "error": "probe worker could not start within its memory cap "
                          f"of {limits.worker_memory_mb} MB; file not probed"}))
        return 0
    try:
        info = probe_in_process(path, limits)
        print(json.dumps({"ok": True, "info": info.model_dump()}))
    except ProbeError as e:
        print(json.dumps({"ok": False, "error": str(e), "status": e.status}))
    except MemoryError:
        print(json.dumps({"ok": False, "error": "probe ran out of its memory cap; file rejected", "status": 422}))
    except Exception as e:  # anything FFmpeg throws at us is a property of the file
        print(json.dumps({"ok": False, "error": f"unreadable media ({type(e).__name__}: {e})", "status": 415}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
