"""`conductor video ...` through click's runner: JSON shapes and one-line errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cluster.cli import cli


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("cli-data"))

    def go(*args: str):
        return CliRunner().invoke(cli, ["video", *args, "--data-dir", data])
    return go


def test_ingest_search_analyze_json(run, std_clip):
    r = run("ingest", str(std_clip.path), "--json")
    assert r.exit_code == 0, r.output
    vid = json.loads(r.stdout)[0]["video"]
    r = run("search", "quarterly revenue", "--video", vid, "--json")
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)
    assert {"video", "start", "end", "score", "why"} <= set(hits[0]) and hits[0]["why"][0] == "ocr"
    r = run("analyze", str(std_clip.path), "--no-llm", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert {"duration", "scenes", "key_moments", "transcript", "summary"} <= set(doc)
    assert [s["start"] for s in doc["scenes"]] == [0.0, 2.0, 4.0]
    r = run("list", "--json")
    assert json.loads(r.stdout)[0]["video"] == vid


def test_bad_inputs_are_one_line_errors(run, tmp_path):
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    for args in (("ingest", str(bad)), ("ingest", str(tmp_path / "missing.mp4")), ("analyze", str(bad)),
                 ("search", "x", "--video", "nope")):
        r = run(*args)
        assert r.exit_code == 1, (args, r.output)
        assert r.output.startswith("Error: ") and "Traceback" not in r.output
    assert run("search", "  ").exit_code == 2
