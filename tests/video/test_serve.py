"""`/v1/video` routes: in-process (FastAPI app + real Ray decode worker) and over HTTP on the served stack."""

from __future__ import annotations

import os
import time

import pytest


@pytest.fixture(scope="module")
def api(ray_cluster, tmp_path_factory):
    from fastapi.testclient import TestClient

    from apps.video.serve import make_app
    from cluster.config import ConductorConfig

    cfg = ConductorConfig.model_validate({"video": {"data_dir": str(tmp_path_factory.mktemp("serve-video"))},
                                          "server": {"max_upload_bytes": 2_000_000}})
    app = make_app(cfg)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c
    if app.state.video._index is not None:
        app.state.video._index.close()


def _post(api, data: bytes, name: str = "clip.mp4"):
    return api.post(f"/ingest?name={name}", content=data, headers={"content-type": "video/mp4"})


def test_bad_uploads_are_4xx_fast(api, tmp_path):
    cases = {
        "random": (os.urandom(100_000), 415),
        "empty": (b"", 400),
        "y4m-65535": (b"YUV4MPEG2 W65535 H65535 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\0" * 4096, 415),
        "y4m-16000": (b"YUV4MPEG2 W16000 H16000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\0" * 4096, 422),
        "too-big": (b"\0" * 2_000_001, 413),
        "over-json-limit": (os.urandom(1_500_000), 415),  # uploads have their own cap, above the JSON one
    }
    for name, (data, status) in cases.items():
        t = time.perf_counter()
        r = _post(api, data, name + ".mp4")
        assert r.status_code == status, (name, r.text)
        assert r.json()["error"]["message"], name
        assert time.perf_counter() - t < 10, name  # no hang and no decode of the bogus stream (not a speed test)
    r = api.post("/ingest?name=r.mp4&job=rejected-job", content=os.urandom(100_000),
                 headers={"content-type": "video/mp4"})
    assert r.status_code == 415 and api.get("/ingest/rejected-job").json()["stage"] == "stopped: video rejected"
    r = api.post("/ingest", files={"file": ("a.mp4", b"x")})
    assert r.status_code == 415 and "raw request body" in r.json()["error"]["message"]
    assert list((api.app.state.video.uploads).glob("*")) == []  # rejected uploads are not kept
    r = api.post("/search", content=b'{"query": "' + b"a" * 1_100_000 + b'"}',
                 headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert api.post("/search", content=b"{nope", headers={"content-type": "application/json"}).status_code == 400
    assert api.post("/search", json={"query": "x", "k": 0}).status_code == 400


def test_ingest_then_search_and_analysis(api, std_clip):
    r = _post(api, std_clip.path.read_bytes(), "standard.mp4")
    assert r.status_code == 200, r.text
    vid = r.json()["video"]
    assert r.json()["segments"] == 3
    again = _post(api, std_clip.path.read_bytes(), "copy.mp4")  # same bytes: answered from the library
    assert again.status_code == 200 and again.json()["video"] == vid
    assert len(list(api.app.state.video.uploads.glob("*"))) == 1
    hits = api.post("/search", json={"query": "quarterly revenue", "video": vid}).json()["data"]
    assert hits[0]["segment"] == 1 and hits[0]["why"][0] == "ocr"
    doc = api.get(f"/videos/{vid}").json()
    assert [s["start"] for s in doc["scenes"]] == [0.0, 2.0, 4.0]
    assert api.get(f"/videos/{vid}/thumbnails/1.jpg").headers["content-type"] == "image/jpeg"
    assert api.get(f"/videos/{vid}/thumbnails/9.jpg").status_code == 404
    assert api.post("/search", json={"query": ""}).status_code == 400
    assert api.post("/search", json={"query": "x", "video": "abc"}).status_code == 404
    assert api.get("/videos/zzz").status_code == 404


@pytest.mark.serve
def test_http_on_served_stack(serve_stack, std_clip):
    import httpx

    h = {"Authorization": f"Bearer {serve_stack.api_key}"} if serve_stack.api_key else {}
    with httpx.Client(base_url=serve_stack.base_url, headers=h, timeout=300) as c:
        r = c.post("/v1/video/ingest?name=bad.mp4", content=os.urandom(50_000),
                   headers={"content-type": "video/mp4"})
        assert r.status_code == 415, r.text
        assert c.post("/v1/video/ingest?name=a.mp4&job=../etc", content=b"x",
                      headers={"content-type": "video/mp4"}).status_code == 400
        # The upload names a job; its progress is polled while it runs, as the Video tab does.
        import threading
        import uuid

        job, seen, out = uuid.uuid4().hex, [], {}
        t = threading.Thread(target=lambda: out.update(r=c.post(
            f"/v1/video/ingest?name=standard.mp4&job={job}", content=std_clip.path.read_bytes(),
            headers={"content-type": "video/mp4"})))
        t.start()
        while t.is_alive():
            p = c.get(f"/v1/video/ingest/{job}")
            if p.status_code == 200 and (not seen or seen[-1] != p.json()):
                seen.append(p.json())
            time.sleep(0.05)
        r = out["r"]
        assert r.status_code == 200, r.text
        vid = r.json()["video"]
        assert c.get(f"/v1/video/ingest/{job}").json() == {"job": job, "stage": "done", "done": 3, "total": 3}
        assert {x["stage"] for x in seen} & {"probing", "decoding", "analysing segments (speech, on-screen text, "
                                                                    "vectors)"}, seen
        assert [x["done"] for x in seen] == sorted(x["done"] for x in seen)  # it only moves forward
        hits = c.post("/v1/video/search", json={"query": "launch window on tuesday"}).json()["data"]
        assert hits[0]["segment"] == 2
    # Another user: the video, its thumbnails and its moments are as unknown to them as a video that never was.
    from tests.stack import OTHER_KEY

    with serve_stack.http(key=OTHER_KEY, timeout=120) as other:
        assert vid not in str(other.get("/v1/video/videos").json())
        assert other.get(f"/v1/video/videos/{vid}").status_code == 404
        assert other.get(f"/v1/video/ingest/{job}").status_code == 404  # nor its progress
        assert other.post(f"/v1/video/ingest?name=x.mp4&job={job}", content=b"x",
                          headers={"content-type": "video/mp4"}).status_code == 409  # nor its job id
        assert other.get(f"/v1/video/videos/{vid}/thumbnails/0.jpg").status_code == 404
        assert other.post("/v1/video/search", json={"query": "launch window on tuesday"}).json()["data"] == []
        assert other.post("/v1/video/search", json={"query": "launch", "video": vid}).status_code == 404


def test_ui_helpers_against_the_app(api, std_clip):
    """The Video tab's calls, through a real ConductorClient whose HTTP client is the in-process app."""
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from apps.client import ConductorClient
    from apps.video import ui, upload

    root = FastAPI()
    root.mount("/v1/video", api.app)
    client = ConductorClient("http://testserver")
    client._http = TestClient(root, base_url="http://127.0.0.1")
    from apps.client import ACTING_FOR, ON_BEHALF_HEADER

    reports, sent = [], []
    client._http.event_hooks["request"] = [client._say_who,  # the hook the real client's HTTP client has
                                           lambda r: sent.append((r.method, r.headers.get(ON_BEHALF_HEADER)))]
    token = ACTING_FOR.set("alice")  # the Video tab acts for its signed-in user; so must the upload thread
    try:
        rec = upload.ingest_with_progress(client, str(std_clip.path), lambda f, text: reports.append((f, text)),
                                          0.05)
    finally:
        ACTING_FOR.reset(token)
    assert [f for f, _ in reports] == sorted(f for f, _ in reports) and all(0 < f < 1 for f, _ in reports)
    assert ("POST", "alice") in sent and all(user == "alice" for _, user in sent), sent
    doc = ui.load_video(client, rec["video"], summary=False)
    assert len(ui.timeline_items(doc)) == 3 and ui.timeline_items(doc)[0][0].size[0] > 0
    assert {m[1].split()[1] for m in ui.moment_items(doc)} >= {"scene", "text", "speech:"}
    rows = ui.results_rows(ui.search(client, "launch window", rec["video"]))
    assert rows[0][0] >= 4.0 and "transcript" in rows[0][3]
    with gr.Blocks() as demo:
        ui.build_tab(type("Ctx", (), {"client": client, "config": None})())
    assert any(getattr(b, "elem_id", None) == "conductor-video-player" for b in demo.blocks.values())


def test_an_idle_decode_worker_gives_back_its_cpu_and_its_job_stays_done(api, tmp_path):
    """After `video.worker_idle_s` without an upload the worker actor exits (its CPU share is what a training or
    Ray Data job beside the served stack waits for); the job it finished still reports done to its user."""
    import ray
    from ray.exceptions import RayActorError

    from tests.video.media import standard_clip

    svc = api.app.state.video
    clip = standard_clip(tmp_path / "silent.mp4", speech=False)  # new bytes: an already-known file skips the worker
    svc.vc.worker_idle_s = 1.0
    try:
        r = api.post("/ingest?name=silent.mp4&job=idle-worker-job", content=clip.path.read_bytes(),
                     headers={"content-type": "video/mp4"})
        assert r.status_code == 200, r.text
        worker = svc._worker
        assert worker is not None
        deadline = time.monotonic() + 30
        while svc._worker is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert svc._worker is None, "the idle worker was not retired"
        with pytest.raises(RayActorError):
            ray.get(worker.progress.remote("x"), timeout=60)
        assert api.get("/ingest/idle-worker-job").json()["stage"] == "done"
    finally:
        svc.vc.worker_idle_s = 120.0


def test_overrunning_decode_worker_is_killed_not_the_service(ray_cluster, tmp_path, std_clip):
    """A file whose processing overruns limits.decode_timeout_s: 422, the worker actor is killed, the app lives."""
    import ray
    from fastapi.testclient import TestClient
    from ray.exceptions import RayActorError

    from apps.video.serve import make_app
    from cluster.config import ConductorConfig

    cfg = ConductorConfig.model_validate({"video": {"data_dir": str(tmp_path), "limits": {"decode_timeout_s": 0.5}}})
    app = make_app(cfg)
    svc = app.state.video
    with TestClient(app, base_url="http://127.0.0.1") as c:
        old = svc.worker()
        r = _post(c, std_clip.path.read_bytes())
        assert r.status_code == 422 and "took too long" in r.json()["error"]["message"]
        assert svc._worker is None  # dropped; the next upload starts a fresh one
        assert c.get("/healthz").status_code == 200 and c.get("/videos").json()["data"] == []
        assert list(svc.uploads.glob("*")) == []
    with pytest.raises(RayActorError):
        ray.get(old.process.remote("x", "y"), timeout=60)
