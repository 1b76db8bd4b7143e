"""Untrusted media: every bad file is rejected with a clear reason, fast, without harming the caller."""

from __future__ import annotations

import os
import resource
import time

import pytest

from apps.video.probe import ProbeError, probe
from cluster.config import VideoLimits


def _y4m(path, w, h):
    path.write_bytes(f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420jpeg\nFRAME\n".encode() + b"\x00" * 65536)
    return path


def _reject(path, limits=None) -> ProbeError:
    t = time.perf_counter()
    with pytest.raises(ProbeError) as e:
        probe(path, limits)
    assert time.perf_counter() - t < 10, "rejected from the header, without decoding (not a speed test)"
    assert 400 <= e.value.status < 500
    return e.value


def test_real_clips_pass(bikes, std_clip):
    info = probe(bikes)
    assert (info.width, info.height, info.fps, info.frames) == (640, 272, 25.0, 250)
    assert info.audio_codec is None
    std = probe(std_clip.path)
    assert std.audio_codec == "aac" and abs(std.duration - std_clip.duration) < 0.3


def test_a_probe_in_a_threaded_server_is_not_stalled_by_other_threads_state(bikes, forked_child_hazard):
    """An upload hung here once: the probe's child ran Python between fork and exec, where another thread's PyAV
    scaler was freed and waited forever (deployments/limited_exec.py)."""
    got = []
    assert forked_child_hazard(lambda: got.append(probe(bikes)), seconds=15)
    assert got[0].frames == 250


def test_giant_header_rejected(tmp_path):
    # FFmpeg itself refuses 65535x65535; our limit catches sizes FFmpeg would accept.
    assert "65535x65535 is invalid" in str(_reject(_y4m(tmp_path / "huge.y4m", 65535, 65535)))
    e = _reject(_y4m(tmp_path / "big.y4m", 16000, 16000))
    assert "16000x16000 exceeds" in str(e)


def test_random_bytes_truncated_empty_and_no_video(tmp_path, bikes):
    rnd = tmp_path / "random.mp4"
    rnd.write_bytes(os.urandom(300_000))
    assert "not a readable media file" in str(_reject(rnd))
    data = bikes.read_bytes()
    trunc = tmp_path / "trunc.mp4"
    trunc.write_bytes(data[: len(data) // 3])
    _reject(trunc)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert "empty" in str(_reject(empty))
    assert "no such file" in str(_reject(tmp_path / "missing.mp4"))
    audio_only = tmp_path / "audio.m4a"
    _audio_file(audio_only)
    assert "no video stream" in str(_reject(audio_only))


def test_limits_are_settings(bikes):
    assert _reject(bikes, VideoLimits(max_bytes=100_000)).status == 413
    assert "duration" in str(_reject(bikes, VideoLimits(max_duration_s=5)))
    assert "frame rate" in str(_reject(bikes, VideoLimits(max_fps=24)))
    assert "frame size" in str(_reject(bikes, VideoLimits(max_width=320)))


def test_caller_memory_does_not_grow(tmp_path):
    huge = _y4m(tmp_path / "huge.y4m", 65535, 65535)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(5):
        with pytest.raises(ProbeError):
            probe(huge)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 20_000  # KiB


def test_worker_memory_cap_kills_only_the_worker(bikes):
    # A cap too small for the worker to even start: the probe fails cleanly, this process is untouched.
    with pytest.raises(ProbeError) as e:
        probe(bikes, VideoLimits(worker_memory_mb=64))
    assert "probe" in str(e.value) or "memory" in str(e.value)


def _audio_file(path):
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        s = out.add_stream("aac", rate=16000, layout="mono")
        for k in range(0, 16000, 1024):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 16000, k
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def _ts_clip(path) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w", format="mpegts") as c:
        s = c.add_stream("mpeg2video", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, dtype=np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_playlists_cannot_reach_the_network_or_other_files(tmp_path):
    """An HLS playlist names a local listener and another user's upload: the probe refuses the playlist itself
    (file protocol only, container allowlist), the listener sees no connection, the other file is not opened."""
    import socket
    import threading

    other = tmp_path / "other-user" / "secret.ts"
    other.parent.mkdir()
    _ts_clip(other)
    probe(other)  # a real clip: the allowlist itself accepts MPEG-TS
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(5)
    hits: list[bytes] = []

    def accept() -> None:
        try:
            conn, _ = srv.accept()
            hits.append(conn.recv(100))
        except OSError:
            pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    for name, segment in [("net.m3u8", f"http://127.0.0.1:{srv.getsockname()[1]}/seg.ts"), ("file.m3u8", str(other)),
                          ("file2.mp4", str(other))]:
        playlist = tmp_path / name
        playlist.write_text(f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{segment}\n"
                            "#EXT-X-ENDLIST\n")
        e = _reject(playlist)
        assert e.status == 415, str(e)
    concat = tmp_path / "list.ffconcat"
    concat.write_text(f"ffconcat version 1.0\nfile '{other}'\n")
    assert _reject(concat).status == 415
    t.join(6)
    srv.close()
    assert hits == []
