"""Standalone throughput proof: train a preset for N steps with plain PyTorch and print one JSON line.

No Ray, no tokenizers, no numpy: it runs on a bare CUDA machine with only torch. The data is the Python
standard library's source read as bytes (ids 0-255) fed to the preset's model unchanged (vocab_size 8192 for
`small`), so the compute per token is exactly the preset's and the loss still falls on real text.

    python -m training.gpu_bench --preset small --steps 200            # bf16 autocast on CUDA, MFU vs H100 peak
    python -m training.gpu_bench --device cpu --preset debug --steps 5  # smoke test anywhere
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
import time
from pathlib import Path

PRESET_VOCAB = {"debug": 256, "shakespeare-char": 256, "small": 8192}


def byte_corpus(max_bytes: int):
    import torch

    chunks, total = [], 0
    for f in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "site-packages" in f.parts:
            continue
        try:
            b = f.read_bytes()
        except OSError:
            continue
        chunks.append(b)
        total += len(b)
        if total >= max_bytes:
            break
    return torch.frombuffer(bytearray(b"\n".join(chunks)[:max_bytes]), dtype=torch.uint8).long()


def main(argv: list[str] | None = None) -> dict:
    import torch

    from training.config import preset
    from training.worker_loop import lr_at, peak_flops
    from training.model import GPT, GPTConfig

    ap = argparse.ArgumentParser(prog="training.gpu_bench")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10, help="steps excluded from the timing")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    ap.add_argument("--grad-accum", type=int, default=None, help="default: the preset's")
    ap.add_argument("--dtype", default=None, help="default bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = ap.parse_args(argv)

    cfg = preset(args.preset)
    device = torch.device(args.device)
    bs = args.batch_size or cfg.batch_size
    accum = args.grad_accum or cfg.gradient_accumulation_steps
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    mcfg = GPTConfig.from_dict({**cfg.to_dict(), "vocab_size": PRESET_VOCAB.get(args.preset, 8192)})
    model = GPT(mcfg).to(device)
    opt = model.configure_optimizer(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), device.type)
    step_model = torch.compile(model) if args.compile else model
    data = byte_corpus(50_000_000 if device.type == "cuda" else 2_000_000).to(device)
    T = mcfg.block_size
    offsets = torch.arange(T, device=device)[None, :]
    g = torch.Generator().manual_seed(0)
    amp = torch.autocast(device.type, dtype=getattr(torch, dtype)) if dtype != "float32" else torch.autocast(
        device.type, enabled=False)
    losses, timed_tokens, timed_s = [], 0, 0.0
    for it in range(args.steps + args.warmup):
        for grp in opt.param_groups:
            grp["lr"] = lr_at(cfg, it)
        t0 = time.perf_counter()
        for _ in range(accum):
            # Gather the batch on the device: per-sequence Python slicing was the bottleneck at small batches.
            pos = torch.randint(len(data) - T - 1, (bs, 1), generator=g).to(device) + offsets
            x, y = data[pos], data[pos + 1]
            with amp:
                _, loss = step_model(x, y)
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())  # .item() synchronises, so the step time below is real
        if it >= args.warmup:
            timed_s += time.perf_counter() - t0
            timed_tokens += bs * accum * T
    tps = timed_tokens / timed_s
    peak = peak_flops(device)
    result = {
        "preset": args.preset, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "dtype": dtype, "compile": args.compile, "params": model.num_params(False),
        "batch_size": bs, "grad_accum": accum, "block_size": T, "steps_timed": args.steps,
        "tokens_per_s": round(tps, 1), "mfu": round(model.flops_per_token() * tps / peak, 4) if peak else None,
        "peak_flops_assumed": peak, "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4),
        "max_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "data": "Python stdlib source as bytes",
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
