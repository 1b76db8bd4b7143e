"""The from-scratch transformer, pure PyTorch (no Ray): learning, KV cache, GQA, config validation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.model import GPT, MODEL_PRESETS, GPTConfig, apply_rope

TINY = dict(block_size=24, vocab_size=50, n_layer=2, n_head=4, n_embd=32)


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY))
    x = torch.randint(50, (4, 24))
    y = torch.roll(x, -1, dims=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    _, first = model(x, y)
    assert abs(first.item() - math.log(50)) < 0.3  # starts near chance
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1, f"did not memorise one batch: loss {loss.item():.3f}"


@pytest.mark.parametrize("kv", [4, 2, 1])  # MHA, GQA, MQA
def test_kv_cache_generation_equals_uncached(kv):
    torch.manual_seed(1)
    model = GPT(GPTConfig(**{**TINY, "num_kv_heads": kv})).eval()
    prompt = torch.randint(50, (2, 5))
    with torch.no_grad():
        cached = model.generate(prompt, 19, temperature=0, use_cache=True)  # fills the block exactly
        plain = model.generate(prompt, 19, temperature=0, use_cache=False)
        assert torch.equal(cached, plain)
        # logits too, position by position, not only the argmax
        from training.model import KVCache

        cache = KVCache(model.config, 2, "cpu", torch.float32)
        step_logits = [model(prompt, cache=cache)[0][:, -1]]
        for t in range(5, 12):
            step_logits.append(model(plain[:, t : t + 1], cache=cache)[0][:, -1])
        full, _ = model(plain[:, :12])
        torch.testing.assert_close(torch.stack(step_logits, 1), full[:, 4:12], atol=1e-5, rtol=1e-5)
        # past block_size the cached path keeps generating (sliding window)
        assert model.generate(prompt, 40, temperature=0).shape == (2, 45)


def _reference_attention(attn, x, cos, sin):
    """Plain-loop MHA written independently: explicit softmax(QK^T/sqrt(d)) with a causal mask, per head."""
    B, T, C = x.shape
    hd = attn.hd
    q = attn.q_proj(x).view(B, T, attn.n_head, hd)
    k = attn.k_proj(x).view(B, T, attn.n_kv, hd)
    v = attn.v_proj(x).view(B, T, attn.n_kv, hd)
    outs = []
    for h in range(attn.n_head):
        kv = h // (attn.n_head // attn.n_kv)
        qh = apply_rope(q[:, :, h].unsqueeze(1), cos, sin)[:, 0]
        kh = apply_rope(k[:, :, kv].unsqueeze(1), cos, sin)[:, 0]
        scores = qh @ kh.transpose(1, 2) / math.sqrt(hd)
        scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        outs.append(F.softmax(scores, -1) @ v[:, :, kv])
    return attn.o_proj(torch.cat(outs, -1))


@pytest.mark.parametrize("kv", [4, 2, 1])
def test_attention_matches_reference_mha(kv):
    torch.manual_seed(2)
    model = GPT(GPTConfig(**{**TINY, "num_kv_heads": kv})).eval()
    attn = model.layers[0].self_attn
    x = torch.randn(2, 10, 32)
    cos, sin = model.rope_cos[:10], model.rope_sin[:10]
    with torch.no_grad():
        torch.testing.assert_close(attn(x, cos, sin), _reference_attention(attn, x, cos, sin), atol=1e-5, rtol=1e-5)


def test_gqa_equals_mha_with_shared_kv_weights():
    """A GQA model (2 kv heads) equals an MHA model whose k/v heads are copies shared by each query group."""
    torch.manual_seed(3)
    gqa = GPT(GPTConfig(**{**TINY, "num_kv_heads": 2})).eval()
    mha = GPT(GPTConfig(**{**TINY, "num_kv_heads": 4})).eval()
    sd = gqa.state_dict()
    hd = 32 // 4
    for name, t in list(sd.items()):
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            sd[name] = t.view(2, hd, 32).repeat_interleave(2, dim=0).reshape(4 * hd, 32)
    mha.load_state_dict(sd)
    x = torch.randint(50, (3, 24))
    with torch.no_grad():
        torch.testing.assert_close(gqa(x)[0], mha(x)[0], atol=1e-5, rtol=1e-5)
    assert mha.num_params() > gqa.num_params()  # GQA really has fewer kv parameters


def test_untied_embeddings_and_param_counts():
    tied = GPT(GPTConfig(**TINY))
    untied = GPT(GPTConfig(**{**TINY, "tie_embeddings": False}))
    assert tied.lm_head.weight is tied.embed_tokens.weight
    assert untied.lm_head.weight is not untied.embed_tokens.weight
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == 50 * 32
    small = GPTConfig(**{**MODEL_PRESETS["small"], "vocab_size": 8192})
    with torch.device("meta"):
        n = sum(p.numel() for p in GPT(small).parameters())
    assert 20e6 <= n <= 50e6, n


@pytest.mark.parametrize("bad, msg", [
    (dict(n_embd=30, n_head=4), "divisible by n_head"),
    (dict(n_head=4, num_kv_heads=3), "divisible by num_kv_heads"),
    (dict(n_layer=0), "n_layer must be >= 1"),
    (dict(dropout=1.5), "dropout"),
])
def test_config_validation(bad, msg):
    with pytest.raises(ValueError, match=msg):
        GPTConfig(**{**TINY, **bad})


def test_rejects_sequences_longer_than_block():
    model = GPT(GPTConfig(**TINY))
    with pytest.raises(ValueError, match="exceeds block_size"):
        model(torch.zeros(1, 25, dtype=torch.long))


def test_gpu_bench_smoke_on_cpu(capsys):
    """training/gpu_bench.py (run on an H100 for BENCHMARKS) also runs on a CPU and prints one JSON line."""
    import json

    from training.gpu_bench import main

    main(["--device", "cpu", "--preset", "debug", "--steps", "3", "--warmup", "1"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["tokens_per_s"] > 0 and out["mfu"] is None and out["steps_timed"] == 3
    assert out["loss_last"] < out["loss_first"]


def test_handwritten_backwards_match_autograd_of_the_plain_ops():
    """The fast RMSNorm and RoPE (hand-written backward) against autograd of their textbook formulas, in float64."""
    from training.model import RMSNorm, _RMSNormFn, rope_cache

    torch.manual_seed(3)
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64, requires_grad=True)
    norm = RMSNorm(8, 1e-5).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    assert torch.autograd.gradcheck(lambda t, w: _RMSNormFn.apply(t, w, 1e-5), (x, norm.weight))
    ref = norm.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    g = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (x, norm.weight), g)
    got = torch.autograd.grad(norm(x), (x, norm.weight), g)
    for a, b in zip(want, got):
        assert torch.allclose(a, b, atol=1e-12)

    cos, sin = (t.double() for t in rope_cache(8, 5, 10000.0))
    x1, x2 = x.chunk(2, dim=-1)
    ref = x * cos + torch.cat([-x2, x1], dim=-1) * sin
    got = apply_rope(x, cos, sin)
    assert torch.allclose(ref, got, atol=1e-12)
    assert torch.allclose(*(torch.autograd.grad(t, x, g)[0] for t in (ref, got)), atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: apply_rope(t, cos, sin), (x,))


def test_the_fused_cpu_optimizer_takes_the_same_steps_as_the_per_tensor_one():
    torch.manual_seed(0)
    cfg = GPTConfig(**MODEL_PRESETS["debug"], vocab_size=65)
    models = [GPT(cfg), GPT(cfg)]
    models[1].load_state_dict(models[0].state_dict())
    fused = models[0].configure_optimizer(0.1, 1e-2, (0.9, 0.99), "cpu")
    assert fused.defaults["fused"]
    groups = [{"params": [p for p in models[1].parameters() if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in models[1].parameters() if p.dim() < 2], "weight_decay": 0.0}]
    plain = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.99), foreach=False)
    x, y = torch.randint(0, 65, (4, 32)), torch.randint(0, 65, (4, 32))
    for _ in range(5):
        for model, opt in zip(models, (fused, plain)):
            _, loss = model(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
