"""The gateway's sections of ConductorConfig: how a model picks among its backends (strategy names are LiteLLM's
where they mean the same, so a LiteLLM router config reads the same here), canary rollouts, and accounting."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Our short names and LiteLLM's; each pair means the same.
STRATEGY_ALIASES = {"weighted": "simple-shuffle", "least-busy": "least-busy", "latency": "latency-based-routing",
                    "cost": "cost-based-routing", "fallback": "fallback"}
Strategy = Literal["fallback", "simple-shuffle", "least-busy", "latency-based-routing", "cost-based-routing",
                   "weighted", "latency", "cost"]


class RolloutConfig(BaseModel):
    """A canary rollout: `canary` takes a growing share of the model's traffic (sticky per user) while its error
    rate and p95 latency stay within margins of `stable`'s; past them, traffic returns to `stable` at once."""

    model_config = ConfigDict(extra="forbid")

    stable: str = Field(..., description="Backend name serving most traffic.")
    canary: str = Field(..., description="Backend name being rolled out.")
    shadow: str | None = Field(None, description="Backend that gets a copy of traffic; its answers are recorded "
                               "and compared, never returned.")
    steps: list[int] = Field(default_factory=lambda: [10, 25, 50, 100], min_length=1,
                             description="Canary traffic percentages, advanced one at a time.")
    step_interval_s: float = Field(300.0, gt=0, description="Time at a step, with enough samples, before the next.")
    auto: bool = Field(True, description="Advance steps and roll back automatically; off: weights change only by "
                       "`conductor rollout`.")
    window_s: float = Field(300.0, gt=0, description="Sliding window of outcomes the analysis looks at.")
    min_samples: int = Field(20, ge=1, description="Canary requests in the window before anything is decided.")
    max_error_rate_increase: float = Field(0.05, ge=0, le=1, description="Roll back when the canary's error rate "
                                           "exceeds the stable's by more than this.")
    max_latency_ratio: float = Field(1.5, ge=1, description="Roll back when the canary's p95 latency exceeds this "
                                     "many times the stable's.")
    shadow_percent: int = Field(100, ge=0, le=100, description="Share of requests copied to the shadow backend.")

    @model_validator(mode="after")
    def _check(self) -> "RolloutConfig":
        if self.stable == self.canary:
            raise ValueError("rollout: stable and canary must be different backends")
        if self.shadow in (self.stable, self.canary):
            raise ValueError("rollout: the shadow backend must be neither stable nor canary")
        if any(not 0 < s <= 100 for s in self.steps) or self.steps != sorted(self.steps):
            raise ValueError(f"rollout.steps must rise within 1..100, got {self.steps}")
        return self


def strategy_name(name: str) -> str:
    """The canonical (LiteLLM) name of a strategy."""
    return STRATEGY_ALIASES.get(name, name)


class AccountingConfig(BaseModel):
    """Virtual keys, budgets and the spend log (apps/keys.py, apps/gateway/spend.py), in one database."""

    model_config = ConfigDict(extra="forbid")

    db_url_env: str | None = Field(None, description="Env var holding a PostgreSQL URL (gateway replicas on several "
                                   "machines); default a SQLite file in data_dir (every replica of one machine).")
    data_dir: str = Field("~/.conductor/gateway", description="Where the SQLite file (accounting.sqlite3) lives.")
    retention_days: int = Field(90, ge=1, description="Spend rows older than this are deleted.")
    buffer_rows: int = Field(10_000, ge=10, description="Spend rows held in memory while the database is down; "
                             "past it the oldest are dropped (conductor_spend_rows_dropped_total).")
    key_cache_s: float = Field(2.0, ge=0, description="How long a replica trusts a virtual key it looked up: a key "
                               "revoked through another replica stops working within this.")


class SemanticCacheConfig(BaseModel):
    """Answers reused for prompts that mean the same (apps/gateway/semantic_cache.py): the prompt embedded by the
    Embedder deployment, its nearest cached prompt in Qdrant, reused above `threshold` cosine similarity."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Off by default: a near match is not the same question.")
    models: list[str] = Field(default_factory=list, description="Models (ids, aliases or tags) it serves; empty: "
                              "every model.")
    threshold: float = Field(0.95, gt=0, le=1, description="Cosine similarity a cached prompt needs.")
    ttl_s: float = Field(3600.0, gt=0)
    max_entries: int = Field(10_000, ge=1, description="Per replica with the in-memory store; oldest go first.")
    scope: Literal["user", "shared"] = Field("user", description="user: one user's answers are never another's; "
                                             "shared: every user's (public data only).")
    allow_sampling: bool = Field(False, description="Also for temperature > 0 (meant to vary).")
    allow_tools: bool = Field(False, description="Also for requests with tools.")
    qdrant_url: str | None = Field(None, description="A Qdrant server shared by replicas; None: in memory.")
