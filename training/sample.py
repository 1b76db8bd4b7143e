"""Load a training checkpoint and generate text from it (`conductor sample`, the UI, export verification)."""

from __future__ import annotations

import json
from pathlib import Path


def load_checkpoint(path: str | Path, device: str = "cpu"):
    """Return (model in eval mode, tokenizer, TrainConfig). Raises ValueError naming what is wrong."""
    import torch

    from training.config import TrainConfig
    from training.data import load_tokenizer
    from training.worker_loop import load_state
    from training.model import GPT
    from training.ray_trainer import validate_checkpoint

    p = validate_checkpoint(path)
    cfg = TrainConfig.from_dict(json.loads((p / "config.json").read_text()))
    model = GPT(cfg.model_config())
    state = load_state(p, torch.device(device))
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as e:
        raise ValueError(f"checkpoint {p} does not match its config.json: {str(e).splitlines()[0][:200]}") from None
    model.to(device).eval()
    return model, load_tokenizer(p / "tokenizer.json"), cfg


def generate_text(model, tok, prompt: str, max_new_tokens: int, temperature: float = 0.8, top_k: int | None = 50,
                  seed: int = 0) -> str:
    """The continuation only (the prompt is not repeated)."""
    import torch

    device = next(model.parameters()).device
    ids = tok.encode(prompt, add_special_tokens=False).ids or [0]
    ids = ids[-model.config.block_size:]
    g = torch.Generator(device=device).manual_seed(seed)
    out = model.generate(torch.tensor([ids], device=device), max_new_tokens, temperature, top_k, generator=g)
    return tok.decode(out[0, len(ids):].tolist())
