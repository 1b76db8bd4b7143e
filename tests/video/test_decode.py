"""Decoding, sampling strategies and cut detection on synthetic clips with known cuts and on a real clip."""

from __future__ import annotations

import re
import subprocess

import pytest

from apps.video.decode import DecodeError, decode, histogram
from apps.video.scenes import build_segments, detect_cuts
from tests.video.conftest import ffmpeg_available
from tests.video.media import Scene, make_clip


@pytest.fixture(scope="module")
def cuts_clip(clip_dir):
    # 5 shots with cuts at frame boundaries that are not multiples of the sampling interval
    scenes = [Scene(1.24, (220, 30, 30)), Scene(0.96, (30, 200, 30)), Scene(1.6, (30, 30, 220)),
              Scene(0.8, (230, 230, 40)), Scene(1.4, (120, 40, 160))]
    return make_clip(clip_dir / "cuts.mp4", scenes, fps=25, gop=50)


def test_scene_cuts_within_one_frame(cuts_clip):
    d = decode(str(cuts_clip.path), "scene", fps=2)
    cuts = [c.t for c in detect_cuts(d.signatures)]
    assert len(cuts) == len(cuts_clip.cuts), (cuts, cuts_clip.cuts)
    for found, truth in zip(cuts, cuts_clip.cuts):
        assert abs(found - truth) <= 1 / cuts_clip.fps + 1e-6, (found, truth)
    segs = build_segments(d.duration, detect_cuts(d.signatures))
    assert [round(s.start, 2) for s in segs] == [0.0] + [round(c, 2) for c in cuts_clip.cuts]


def test_keyframes_decode_fewer_frames_than_uniform(cuts_clip, bikes):
    for path in (str(cuts_clip.path), str(bikes)):
        uni, key = decode(path, "uniform", fps=2), decode(path, "keyframes")
        assert key.decoded < uni.decoded / 4, (key.decoded, uni.decoded)
        assert all(f.key for f in key.frames)
        # uniform keeps ~2 frames per second of video
        assert abs(len(uni.frames) - 2 * uni.duration) <= 2


def test_uniform_sampling_places_cuts_to_the_sample_interval(cuts_clip):
    d = decode(str(cuts_clip.path), "uniform", fps=4)
    cuts = [c.t for c in detect_cuts([(f.t, histogram(f.image)) for f in d.frames])]
    assert len(cuts) == len(cuts_clip.cuts)
    assert all(0 <= f - t <= 0.25 + 1e-6 for f, t in zip(cuts, cuts_clip.cuts))


@pytest.mark.skipif(not ffmpeg_available(), reason="ffmpeg is not installed (apt-get install -y ffmpeg)")
def test_real_clip_cuts_agree_with_ffmpeg(bikes):
    out = subprocess.run(["ffmpeg", "-hide_banner", "-i", str(bikes), "-vf", "select='gt(scene,0.3)',showinfo",
                          "-f", "null", "-"], capture_output=True, text=True, timeout=60).stderr
    truth = [float(x) for x in re.findall(r"pts_time:([0-9.]+)", out)]
    assert len(truth) >= 3
    d = decode(str(bikes), "scene")
    ours = [c.t for c in detect_cuts(d.signatures, threshold=0.3)]
    matched = [t for t in truth if any(abs(t - o) <= 1 / 25 + 1e-6 for o in ours)]
    assert all(any(abs(t - o) <= 1 / 25 + 1e-6 for t in truth) for o in ours), (ours, truth)  # no false cuts
    assert len(matched) >= 0.75 * len(truth), (ours, truth)


def test_audio_track_is_decoded_at_16k(std_clip):
    d = decode(str(std_clip.path), "keyframes")
    assert d.audio is not None and abs(len(d.audio) / 16000 - std_clip.duration) < 0.3


def test_truncated_mid_stream_keeps_decoded_frames(tmp_path, clip_dir):
    # moov first (faststart) so the header survives and the data is cut: decode what is there
    src = make_clip(clip_dir / "long.mp4", [Scene(3.0, (10, 200, 10))])
    import av

    fast = tmp_path / "fast.mp4"
    with av.open(str(src.path)) as i, av.open(str(fast), "w", options={"movflags": "faststart"}) as o:
        s = o.add_stream_from_template(i.streams.video[0])
        for p in i.demux(i.streams.video[0]):
            if p.dts is not None:
                p.stream = s
                o.mux(p)
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    d = decode(str(cut), "uniform")
    assert 0 < d.decoded < 75
    with pytest.raises(DecodeError):
        decode(str(tmp_path / "nothing.mp4"))
    with pytest.raises(ValueError):
        decode(str(src.path), "bogus")  # type: ignore[arg-type]
