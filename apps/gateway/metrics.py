"""Gateway metrics, recorded twice on purpose:

- through `ray.util.metrics`, so Ray exports them (prefixed `ray_`) on its metrics port, aggregated over every
  replica, into the Ray dashboard's Prometheus;
- into this replica's own prometheus_client registry, served at `GET /metrics` for an immediate, scrape-able view
  (exact for the default single gateway replica; with more, use Ray's export for the cluster-wide numbers).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]


class _Both:
    """One metric, two sinks. `ray_metric` is None outside a Ray worker (plain unit use)."""

    def __init__(self, prom: Any, ray_metric: Any, labels: tuple[str, ...]):
        self.prom, self.ray_metric, self.labels = prom, ray_metric, labels

    def _tags(self, kw: dict[str, str]) -> dict[str, str]:
        return {k: str(kw.get(k, "")) for k in self.labels}

    def _prom(self, tags: dict[str, str]) -> Any:
        return self.prom.labels(**tags) if self.labels else self.prom

    def inc(self, value: float = 1.0, **labels: str) -> None:
        tags = self._tags(labels)
        self._prom(tags).inc(value)
        if self.ray_metric is not None and value > 0:  # Ray's counters refuse 0 (a request of no tokens)
            self.ray_metric.inc(value, tags=tags)

    def observe(self, value: float, **labels: str) -> None:
        tags = self._tags(labels)
        self._prom(tags).observe(value)
        if self.ray_metric is not None:
            self.ray_metric.observe(value, tags=tags)

    def set(self, value: float, **labels: str) -> None:
        tags = self._tags(labels)
        self._prom(tags).set(value)
        if self.ray_metric is not None:
            self.ray_metric.set(value, tags=tags)


class GatewayMetrics:
    def __init__(self, use_ray: bool = True):
        self.registry = CollectorRegistry()
        try:
            from ray.util import metrics as rm

            import ray

            use_ray = use_ray and ray.is_initialized()
        except ImportError:  # pragma: no cover
            use_ray = False

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> _Both:
            prom = Counter(name, doc, labels, registry=self.registry)
            return _Both(prom, rm.Counter(name, doc, tag_keys=labels) if use_ray else None, labels)

        def hist(name: str, doc: str, labels: tuple[str, ...]) -> _Both:
            prom = Histogram(name, doc, labels, buckets=LATENCY_BUCKETS, registry=self.registry)
            r = rm.Histogram(name, doc, boundaries=LATENCY_BUCKETS, tag_keys=labels) if use_ray else None
            return _Both(prom, r, labels)

        def gauge(name: str, doc: str, labels: tuple[str, ...]) -> _Both:
            prom = Gauge(name, doc, labels, registry=self.registry)
            return _Both(prom, rm.Gauge(name, doc, tag_keys=labels) if use_ray else None, labels)

        mb = ("model", "backend")
        self.requests = counter("conductor_requests_total", "Requests answered, by outcome.",
                                ("model", "backend", "endpoint", "status", "variant"))
        self.errors = counter("conductor_errors_total", "Failed backend attempts and rejected requests.",
                              ("model", "backend", "endpoint", "kind", "variant"))
        self.latency = hist("conductor_request_latency_seconds", "Whole-request latency.",
                            ("model", "backend", "endpoint", "variant"))
        self.ttft = hist("conductor_time_to_first_token_seconds", "Time to the first streamed token.",
                         ("model", "backend", "variant"))
        self.tokens_in = counter("conductor_tokens_input_total", "Prompt tokens.", mb)
        self.tokens_out = counter("conductor_tokens_output_total", "Completion tokens.", mb)
        self.fallbacks = counter("conductor_fallbacks_total", "Requests answered by a backend other than the first.",
                                 ("model", "from_backend", "to_backend"))
        self.breaker_open = gauge("conductor_breaker_open", "1 while a backend's circuit breaker is open.", mb)
        self.cost = counter("conductor_cost_usd_total", "Estimated spend from configured per-token prices.",
                            ("model", "backend", "user"))
        self.budget_refusals = counter("conductor_budget_refusals_total", "Requests refused because their key's "
                                       "budget or tokens-per-minute was spent.", ("kind",))
        self.accounting_errors = counter("conductor_accounting_errors_total", "Budget checks skipped because the "
                                         "accounting database failed (the request was served).", ("op",))
        self.spend_written = counter("conductor_spend_rows_written_total", "Spend log rows written.", ())
        self.spend_dropped = counter("conductor_spend_rows_dropped_total", "Spend log rows dropped: the buffer "
                                     "filled while the database was down.", ())
        self.spend_db_errors = counter("conductor_spend_db_errors_total", "Failed spend log writes (retried).", ())
        self.spend_buffered = gauge("conductor_spend_rows_buffered", "Spend log rows waiting to be written.", ())
        self.rollout_weight = gauge("conductor_rollout_canary_weight", "Percent of a model's users routed to its "
                                    "rollout's canary.", ("model",))
        self.rollout_events = counter("conductor_rollout_events_total", "Rollout steps, promotions, rollbacks and "
                                      "manual changes.", ("model", "event"))
        self.shadow_requests = counter("conductor_shadow_requests_total", "Copies sent to a rollout's shadow "
                                       "backend, by how its answer compared.", ("model", "outcome"))
        self.cache_requests = counter("conductor_cache_requests_total", "Cacheable requests, by outcome (hit, "
                                      "miss, bypass: Cache-Control no-cache; semantic_*: the semantic cache).",
                                      ("model", "outcome"))
        self.cache_hits = counter("conductor_cache_hits_total", "Responses served from the exact-match cache.", ("model",))

    def render(self) -> bytes:
        return generate_latest(self.registry)
