"""Bad inputs: one clear line and exit 1 from the CLI, never a traceback, never a read of the weights."""

from __future__ import annotations

import json
import struct

import pytest
from click.testing import CliRunner

from apps.detective import DetectiveError, inspect_model
from cluster.cli import cli
from deployments import packaged


def _st(path, header: dict, data_bytes: int = 0, claimed_len: int | None = None) -> None:
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", claimed_len if claimed_len is not None else len(raw)))
        f.write(raw)
        f.write(b"\0" * data_bytes)


def _cases(tmp):  # name -> (path, expected fragment of the message)
    (tmp / "empty").mkdir()
    (tmp / "pickles").mkdir()
    (tmp / "pickles" / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    (tmp / "notes.safetensors").write_text("These are my meeting notes, definitely not a model.\n" * 20)
    _st(tmp / "truncated.safetensors", {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, 16,
        claimed_len=10_000)
    _st(tmp / "huge_len.safetensors", {}, claimed_len=2**60)
    with open(tmp / "badjson.safetensors", "wb") as f:
        f.write(struct.pack("<Q", 12) + b'{"a": {"dty' + b"\0" * 32)
    _st(tmp / "past_end.safetensors", {"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}, 16)
    _st(tmp / "absurd.safetensors", {"w": {"dtype": "F32", "shape": [10**9, 10**9], "data_offsets": [0, 4 * 10**18]}})
    _st(tmp / "lying.safetensors", {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, 16)
    _st(tmp / "baddtype.safetensors", {"w": {"dtype": "Q9", "shape": [4], "data_offsets": [0, 4]}}, 16)
    (tmp / "v99.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 99, 0, 0) + b"\0" * 64)
    (tmp / "magic.gguf").write_bytes(b"NOPE" + b"\0" * 64)
    with open(packaged.smollm2_gguf(), "rb") as f:
        (tmp / "cut.gguf").write_bytes(f.read(5000))
    (tmp / "sharded").mkdir()
    (tmp / "sharded" / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "model-00001-of-00002.safetensors"}}))
    (tmp / "readme.txt").write_text("hello")
    return {
        "missing": (tmp / "nope", "no such file"), "empty dir": (tmp / "empty", "no model files"),
        "pickle only": (tmp / "pickles", "pickle"), "text renamed": (tmp / "notes.safetensors", "not a safetensors"),
        "truncated header": (tmp / "truncated.safetensors", "not a safetensors"),
        "absurd header length": (tmp / "huge_len.safetensors", "not a safetensors"),
        "corrupt json": (tmp / "badjson.safetensors", "corrupt"),
        "offsets past end": (tmp / "past_end.safetensors", "past the file"),
        "absurd shape": (tmp / "absurd.safetensors", "absurd"), "size lie": (tmp / "lying.safetensors", "needs"),
        "unknown dtype": (tmp / "baddtype.safetensors", "unknown dtype"),
        "gguf version": (tmp / "v99.gguf", "version 99"), "gguf magic": (tmp / "magic.gguf", "bad magic"),
        "gguf truncated": (tmp / "cut.gguf", "truncated"), "missing shard": (tmp / "sharded", "missing"),
        "not a model file": (tmp / "readme.txt", "not a model file"),
    }


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return _cases(tmp_path_factory.mktemp("bad"))


NAMES = ["missing", "empty dir", "pickle only", "text renamed", "truncated header", "absurd header length",
         "corrupt json", "offsets past end", "absurd shape", "size lie", "unknown dtype", "gguf version",
         "gguf magic", "gguf truncated", "missing shard", "not a model file"]


@pytest.mark.parametrize("name", NAMES)
def test_cli_one_line_error(cases, name):
    path, fragment = cases[name]
    result = CliRunner().invoke(cli, ["detect", str(path), "--json"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("name", NAMES)
def test_api_raises_detective_error(cases, name):
    with pytest.raises(DetectiveError):
        inspect_model(str(cases[name][0]))


def _rchar() -> int:
    for line in open("/proc/self/io"):
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def test_absurd_claims_never_read_gigabytes(tmp_path):
    """A 4 GB (sparse) file whose header claims 3 GB of JSON: rejected after reading 8 bytes."""
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", 3 * 2**30))
        f.truncate(4 * 2**30)
    before = _rchar()
    with pytest.raises(DetectiveError, match="not a safetensors"):
        inspect_model(str(path))
    assert _rchar() - before < 2**20


def test_bad_context_length(tmp_path):
    result = CliRunner().invoke(cli, ["detect", str(packaged.minilm_dir()), "--context", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_maps_without_run_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["detect", str(packaged.minilm_dir()), "--maps", str(tmp_path)])
    assert result.exit_code == 2 and "--maps needs --run" in result.output


def test_run_refuses_gguf():
    result = CliRunner().invoke(cli, ["detect", str(packaged.smollm2_gguf()), "--run"])
    assert result.exit_code == 1 and "--run supports safetensors" in result.output
