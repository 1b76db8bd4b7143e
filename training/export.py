"""Export a training checkpoint as a Hugging Face Llama directory.

training/model.py was laid out as Llama is (same parameter names under `model.`, rotate-half RoPE, float32
RMSNorm, SwiGLU, no biases), so the export is a rename plus a config: transformers' `AutoModelForCausalLM` loads it
and gives the same logits (verified here, max abs diff <= 1e-4 in float32). The tokenizer is the run's own
`tokenizer.json` wrapped as a fast tokenizer, with a simple chat template so a chat engine can format messages.
"""

from __future__ import annotations

import json
from pathlib import Path

# Plain "role: content" turns; the model was not instruction-tuned, so the template only has to be consistent.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
MAX_LOGIT_DIFF = 1e-4


def hf_config(cfg, eos_id: int | None) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.model_config().intermediate_size,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.model_config().num_kv_heads,
        "head_dim": cfg.n_embd // cfg.n_head,
        "max_position_embeddings": cfg.block_size,
        "rms_norm_eps": cfg.model_config().norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": None,
        "eos_token_id": eos_id,
        "pad_token_id": None,
        "torch_dtype": "float32",
        "use_cache": True,
    }


def export_hf(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write config.json, model.safetensors, tokenizer files and generation_config.json into out_dir."""
    from safetensors.torch import save_file
    from transformers import PreTrainedTokenizerFast

    from training.data import EOS, UNK
    from training.sample import load_checkpoint

    model, tok, cfg = load_checkpoint(checkpoint)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path exists and is not a directory: {out}")
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_embeddings:
            continue  # tied: transformers re-ties it to model.embed_tokens
        tensors[name if name == "lm_head.weight" else f"model.{name}"] = t.detach().contiguous().clone()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    eos_id = tok.token_to_id(EOS)
    (out / "config.json").write_text(json.dumps(hf_config(cfg, eos_id), indent=2))
    (out / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": eos_id, "max_length": cfg.block_size, "do_sample": True, "temperature": 0.8, "top_k": 50}
    ))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, unk_token=UNK if tok.token_to_id(UNK) is not None else None,
        model_max_length=cfg.block_size,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))
    # transformers 5 writes the template to chat_template.jinja; older readers look in tokenizer_config.json.
    tc_path = out / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc["chat_template"] = CHAT_TEMPLATE
    tc_path.write_text(json.dumps(tc, indent=2))
    (out / "conductor_training.json").write_text(json.dumps(cfg.to_dict(), indent=2))  # provenance
    return out


def verify_export(checkpoint: str | Path, out_dir: str | Path, seq_len: int | None = None) -> float:
    """Max |logit difference| between Conductor's model and transformers' load of the export (float32, CPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    from training.sample import load_checkpoint

    model, _, cfg = load_checkpoint(checkpoint)
    hf = AutoModelForCausalLM.from_pretrained(str(out_dir), dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(cfg.vocab_size, (2, seq_len or cfg.block_size), generator=g)
    with torch.no_grad():
        ours, _ = model(idx)
        theirs = hf(idx).logits
    diff = (ours - theirs).abs().max().item()
    if diff > MAX_LOGIT_DIFF:
        raise ValueError(f"export verification failed: max |logit diff| {diff:.3e} > {MAX_LOGIT_DIFF}")
    return diff
