"""Key-frame captions from a hosted OpenAI-compatible vision model (a real HTTP server at the network edge that
reads the image it is sent and names its dominant colour), searchable as their own modality."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest


class _Captioner(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802
        from PIL import Image

        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.seen.append(body)
        parts = body["messages"][0]["content"]
        url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))
        colour = ["red", "green", "blue"][int(np.argmax(img.reshape(-1, 3).mean(0)))]
        out = json.dumps({"choices": [{"message": {"role": "assistant",
                                                   "content": f"A plain {colour} screen."}}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def captioner():
    srv = HTTPServer(("127.0.0.1", 0), _Captioner)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


def test_captions_are_stored_and_searchable(captioner, std_clip, tmp_path):
    from apps.video.index import VideoIndex
    from cluster.config import VideoConfig

    vc = VideoConfig(data_dir=str(tmp_path), caption_model="vision-x", caption_base_url=captioner,
                     asr_model="none", ocr=False)
    index = VideoIndex(vc, location=":memory:")
    try:
        rec = index.ingest([str(std_clip.path)])[0]
        assert [s["caption"] for s in rec["scenes"]] == ["A plain red screen.", "A plain green screen.",
                                                         "A plain blue screen."]
        assert _Captioner.seen[0]["model"] == "vision-x"
        top = index.search("blue screen")[0]
        assert top["segment"] == 2 and top["why"][0] == "caption"
    finally:
        index.close()


def test_caption_service_down_does_not_fail_ingest(std_clip, tmp_path):
    from apps.video.pipeline import CaptionStage
    from cluster.config import VideoConfig

    cfg = VideoConfig(caption_model="vision-x", caption_base_url="http://127.0.0.1:9").model_dump()
    stage = CaptionStage(cfg)
    row = {"frames": [b"\xff\xd8"], "video": "x"}
    assert stage(row)["caption"] == "" and stage.errors == 1
