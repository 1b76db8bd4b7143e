"""A small document set written for the RAG tests, and a RagService on a fresh store per test."""

from __future__ import annotations

from pathlib import Path

import pytest

MD = """# Zephyr Router Manual

Intro text about the Zephyr router and what it does for small offices.

## Installation

Unpack the box and connect the WAN port to your modem. Power on and wait for the green light.

## Factory reset

Hold the reset pin for twelve seconds. The error code QX-7741 means the firmware image is corrupt and
must be re-flashed from the recovery console.

```
# not a heading: inside a code fence
```
"""

RST = """Gardening notes
===============

Tomatoes
--------

Tomatoes need full sun, regular watering and support stakes as they grow taller over the summer.

Basil
-----

Basil grows well next to tomatoes and should be pinched back so it does not flower too early.
"""

HTML = """<html><head><title>Kettle FAQ</title><script>var x = "ignore me";</script></head><body>
<h1>Kettle FAQ</h1><p>Questions about the electric kettle.</p>
<h2>Descaling</h2><p>Boil a mix of water and white vinegar, then rinse twice with clean water.</p>
</body></html>"""

TXT = "Penguins are flightless seabirds that live almost exclusively in the Southern Hemisphere.\n"


def make_pdf(text: str) -> bytes:
    """A minimal valid one-page PDF with `text` (xref offsets computed), enough for pypdf to extract it."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = b"%PDF-1.4\n", []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return out


def write_docs(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "router.md").write_text(MD)
    (root / "garden.rst").write_text(RST)
    (root / "kettle.html").write_text(HTML)
    (root / "penguins.txt").write_text(TXT)
    (root / "invoice.pdf").write_bytes(make_pdf("Invoice total due is 4200 euros by March."))
    return root


@pytest.fixture
def docs(tmp_path) -> Path:
    return write_docs(tmp_path / "docs")


@pytest.fixture
def rag_config(tmp_path):
    from cluster.config import load_config

    return load_config(environ={"CONDUCTOR__RAG__DATA_DIR": str(tmp_path / "store")})


@pytest.fixture
def service(rag_config, minilm):
    from apps.rag.library import RagService

    svc = RagService(rag_config, embedder=minilm)
    yield svc
    svc.close()


@pytest.fixture
def rag_http(service, rag_config):
    """The RAG FastAPI app (apps.rag.serve.create_app) served by uvicorn on a free loopback port, as the
    `/v1/rag` prefix the Serve proxy gives it. Yields the base URL of the whole server."""
    import threading
    import time

    import uvicorn
    from fastapi import FastAPI

    from apps.rag.serve import create_app
    from tests.conftest import free_port

    root = FastAPI()
    root.add_api_route("/healthz", lambda: {"status": "ok", "models": {}})  # what the gateway answers at the root
    root.mount("/v1/rag", create_app(rag_config, lambda: service))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
