"""A 10^5-tensor sharded model whose files hold only headers (sparse): inspected by reading headers only."""

from __future__ import annotations

import struct

import pytest

from apps.detective import inspect_model
from apps.detective.synthetic import write_sharded


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    info = write_sharded(folder, layers=64, experts=512, hidden=1536, moe_inter=256, shards=40)
    return folder, info


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def _header_bytes(folder) -> int:
    total = 0
    for p in folder.glob("*.safetensors"):
        with open(p, "rb") as f:
            total += 8 + struct.unpack("<Q", f.read(8))[0]
    return total + sum(p.stat().st_size for p in folder.glob("*.json"))


def test_hundred_thousand_tensors_are_all_counted(synthetic):
    # How fast is `make bench` (benchmarks/bench_detective.py, vs safetensors safe_open): a timed assert here
    # would fail on a loaded CI box without telling anything about the code.
    folder, info = synthetic
    assert info["tensors"] > 98_000 and info["bytes"] > 75 * 10**9  # ~80 GB of (sparse) tensors
    report = inspect_model(str(folder))
    assert report.num_tensors == info["tensors"] and report.family == "qwen3_moe"
    assert (report.num_experts, report.experts_per_token, report.num_layers) == (512, 8, 64)
    assert report.params_total * 2 == report.memory_bytes["bf16"] == report.memory_bytes["stored"]


def test_reads_headers_only(synthetic):
    folder, info = synthetic
    expected = _header_bytes(folder)
    before = _rchar()
    report = inspect_model(str(folder))
    read = _rchar() - before
    assert report.bytes_read == expected  # every byte the reader asked for is header/index/config
    assert read < expected * 1.1 + 2**20, (read, expected)  # and the OS agrees: nothing else was read
    assert report.file_bytes == info["bytes"] and report.bytes_read < report.file_bytes / 1000
