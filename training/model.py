"""A decoder-only transformer, written from scratch in one readable file (in the spirit of nanoGPT).

Llama-style blocks: RMSNorm -> attention with RoPE -> residual, RMSNorm -> SwiGLU MLP -> residual.
Attention has `num_kv_heads`: equal to `n_head` it is multi-head attention (MHA), 1 is multi-query (MQA), anything
that divides `n_head` is grouped-query (GQA) -- one code path, the key/value heads are shared by groups of query
heads. `F.scaled_dot_product_attention` picks the flash / memory-efficient kernels on a GPU. A KV cache makes
generation cost one token's work per step.

The layout (rotate-half RoPE, RMSNorm computed in float32, bias-free linears, `gate/up/down` MLP) deliberately
matches Hugging Face's Llama so `training/export.py` can write a checkpoint transformers loads with equal logits.
This file knows nothing about Ray or DDP.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    # nanoGPT's names where the meaning is the same.
    block_size: int = 256  # context length
    vocab_size: int = 65
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    # Beyond nanoGPT.
    num_kv_heads: int | None = None  # None = n_head (MHA); 1 = MQA; a divisor of n_head = GQA
    intermediate_size: int | None = None  # SwiGLU hidden width; None = ~8/3 * n_embd rounded up to 64
    tie_embeddings: bool = True  # share the token embedding with the output head
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.num_kv_heads is None:
            self.num_kv_heads = self.n_head
        if self.intermediate_size is None:
            self.intermediate_size = 64 * math.ceil(8 * self.n_embd / 3 / 64)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the problem (the CLI turns it into a one-line error before any worker starts)."""
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "num_kv_heads", "intermediate_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_head % self.num_kv_heads:
            raise ValueError(f"n_head ({self.n_head}) must be divisible by num_kv_heads ({self.num_kv_heads})")
        if (self.n_embd // self.n_head) % 2:
            raise ValueError(f"head size n_embd/n_head = {self.n_embd // self.n_head} must be even for RoPE")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# The model shapes of the presets, beside each other. Training settings for them live in training/config.py.
MODEL_PRESETS: dict[str, dict] = {
    # Seconds on a CPU: for tests and smoke runs.
    "debug": dict(block_size=32, n_layer=2, n_head=4, num_kv_heads=2, n_embd=64, dropout=0.0),
    # nanoGPT's shakespeare-char model (10.7M parameters with a 65-character vocabulary).
    "shakespeare-char": dict(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2),
    # ~30M parameters (with an 8k BPE vocabulary, tied) for one GPU.
    "small": dict(block_size=512, n_layer=8, n_head=8, num_kv_heads=4, n_embd=512, dropout=0.0),
}


# On a CPU a model this small spends more time in elementwise ops than in matmuls, and autograd records every
# one of them (pow, mean, add, rsqrt, mul, mul for a norm). The two functions below are the same math with a
# hand-written backward: fewer full-size temporaries, ~7% faster training steps at nanoGPT's CPU config. They are
# used in float32/float64 only; reduced precision (autocast on a GPU) keeps the plain ops.
class _RMSNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):  # x: (..., C)
        r = torch.rsqrt(torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.size(-1)).add_(eps))
        xhat = x * r  # (..., C), r: (..., 1)
        ctx.save_for_backward(xhat, r, weight)
        return xhat * weight

    @staticmethod
    def backward(ctx, g):
        xhat, r, weight = ctx.saved_tensors
        grad_weight = (g * xhat).flatten(0, -2).sum(0)
        gx = g * weight
        dot = (gx * xhat).mean(-1, keepdim=True)  # the projection of the gradient on xhat, per position
        return gx.sub_(xhat * dot).mul_(r), grad_weight, None


class _RopeFn(torch.autograd.Function):
    """Rotate-half RoPE, out = x * cos + rotate_half(x) * sin, without materialising rotate_half(x)."""

    @staticmethod
    def forward(ctx, x, cos, sin):  # x: (B, H, T, D); cos/sin: (T, D)
        ctx.save_for_backward(cos, sin)
        h = x.size(-1) // 2
        x1, x2 = x[..., :h], x[..., h:]
        out = x * cos
        out[..., :h].addcmul_(x2, sin[..., :h], value=-1)
        out[..., h:].addcmul_(x1, sin[..., h:])
        return out

    @staticmethod
    def backward(ctx, g):  # the transpose of the rotation: rotate_half^T(g * sin)
        cos, sin = ctx.saved_tensors
        h = g.size(-1) // 2
        gx = g * cos
        gx[..., :h].addcmul_(g[..., h:], sin[..., h:])
        gx[..., h:].addcmul_(g[..., :h], sin[..., :h], value=-1)
        return gx, None, None


def _full_precision(x: torch.Tensor) -> bool:
    return x.dtype in (torch.float32, torch.float64)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _full_precision(x) and x.dtype == self.weight.dtype:
            return _RMSNormFn.apply(x, self.weight, self.eps)
        # float32 for the statistics, as Llama does: bf16 mean-of-squares loses too much precision.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_cache(head_dim: int, max_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    t = torch.arange(max_len, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)  # rotate-half layout (Llama / HF), not interleaved pairs
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, H, T, D); cos/sin: (T, D)
    if _full_precision(x) and x.dtype == cos.dtype and torch.is_grad_enabled():
        return _RopeFn.apply(x, cos, sin)
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class KVCache:
    """Keys and values of past positions per layer, preallocated to block_size."""

    def __init__(self, cfg: GPTConfig, batch: int, device, dtype):
        shape = (batch, cfg.num_kv_heads, cfg.block_size, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.pos = 0  # number of positions filled

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = k.size(2)
        self.k[layer][:, :, self.pos : self.pos + t] = k
        self.v[layer][:, :, self.pos : self.pos + t] = v
        end = self.pos + t
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.layer, self.n_head, self.n_kv, self.hd = layer, cfg.n_head, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.n_embd, cfg.n_head * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.n_embd, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.n_embd, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_head * cfg.head_dim, cfg.n_embd, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x, cos, sin, cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape  # x: (B, T, C)
        q = self.q_proj(x).view(B, T, self.n_head, self.hd).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, self.n_kv, self.hd).transpose(1, 2)  # (B, nkv, T, hs)
        v = self.v_proj(x).view(B, T, self.n_kv, self.hd).transpose(1, 2)  # (B, nkv, T, hs)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # (B, nkv, S, hs): S = positions so far, this step's included
        if self.n_kv != self.n_head:  # GQA/MQA: each kv head serves n_head/n_kv query heads
            rep = self.n_head // self.n_kv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (B, nh, S, hs)
        # A causal mask only when queries and keys line up; one new token with a cache sees every key.
        causal = cache is None or (T > 1 and cache.pos == 0)
        if cache is not None and T > 1 and cache.pos > 0:  # chunked prefill after a prefix: explicit mask
            S = k.size(2)
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)  # (T, S)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hs)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=causal and T > 1, dropout_p=self.dropout if self.training else 0.0
            )  # (B, nh, T, hs)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.hd))  # (B, T, nh*hs) -> (B, T, C)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.n_embd, bias=False)

    def forward(self, x):  # (B, T, C) -> (B, T, intermediate) -> (B, T, C)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, cache=None):  # (B, T, C) -> (B, T, C), pre-norm residual
        x = x + self.drop(self.self_attn(self.input_layernorm(x), cos, sin, cache))
        return x + self.drop(self.mlp(self.post_attention_layernorm(x)))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rope_cache(cfg.head_dim, cfg.block_size, cfg.rope_theta)
        # Not saved in checkpoints: they are a pure function of the config.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2 style: scale the residual projections by depth so the residual stream does not grow with n_layer.
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embed_tokens.weight.numel()
        return n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None):
        """Return (logits, loss). With a cache, idx holds only the new tokens after cache.pos."""
        B, T = idx.shape  # token ids: (B, T)
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence length {start + T} exceeds block_size {self.config.block_size}")
        cos, sin = self.rope_cos[start : start + T], self.rope_sin[start : start + T]  # (T, hs) each
        x = self.drop(self.embed_tokens(idx))  # (B, T, C)
        for block in self.layers:
            x = block(x, cos, sin, cache)
        if cache is not None:
            cache.pos += T
        x = self.norm(x)
        if targets is None:
            return self.lm_head(x), None
        logits = self.lm_head(x)  # (B, T, vocab_size)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def configure_optimizer(self, weight_decay: float, learning_rate: float, betas, device_type: str):
        # Decay matrices only (not norms), as nanoGPT does. Fused AdamW on the CPU too: one kernel over all the
        # parameters instead of a dozen ops per tensor, +9% tokens/s at nanoGPT's CPU config (interleaved A/B, the
        # same losses to 6 digits).
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type in ("cuda", "cpu"))

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B, as nanoGPT estimates MFU."""
        c = self.config
        return 6 * self.num_params() + 12 * c.n_layer * c.n_head * c.head_dim * c.block_size

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 use_cache: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample max_new_tokens after idx (B, T). temperature 0 is greedy. The context is cropped to block_size."""
        was_training = self.training
        self.eval()
        cache = None
        bs = self.config.block_size
        for _ in range(max_new_tokens):
            if not use_cache:
                logits, _ = self(idx[:, -bs:])
            elif cache is None or cache.pos >= bs:
                # (Re)fill the cache from the last tokens that fit. Past block_size this restarts positions, which
                # is how a sliding window works with RoPE; within block_size it equals the uncached path exactly.
                ctx = idx[:, -bs:] if cache is None else idx[:, -(bs // 2):]
                cache = KVCache(self.config, idx.size(0), idx.device, self.embed_tokens.weight.dtype)
                logits, _ = self(ctx, cache=cache)
            else:
                logits, _ = self(idx[:, -1:], cache=cache)
            nxt = sample_next(logits[:, -1, :].float(), temperature, top_k, generator)
            idx = torch.cat([idx, nxt], dim=1)
        self.train(was_training)
        return idx


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None, generator=None) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits[logits < v[:, [-1]]] = -float("inf")
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)
