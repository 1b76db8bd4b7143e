"""Export round trip: transformers loads the Llama-format directory and matches Conductor's logits (no Ray)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from training.config import preset
from training.export import export_hf, verify_export
from training.worker_loop import local_reporter, run_loop
from training.sample import generate_text, load_checkpoint
from training.ray_trainer import prepare_run


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    # GQA + untied head + BPE: the export paths that differ most from the defaults.
    run = tmp_path_factory.mktemp("exp") / "run"
    cfg = replace(preset("debug"), max_iters=4, eval_interval=4, num_kv_heads=1, tie_embeddings=False,
                  tokenizer="bpe", bpe_vocab_size=400, max_corpus_bytes=80_000)
    cfg = prepare_run(cfg, run, "debug", 1)
    run_loop(cfg.to_dict(), 0, 1, torch.device("cpu"), run, local_reporter(run))
    return run / "checkpoint_000004"


def test_transformers_loads_export_with_matching_logits_and_generation(checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export_hf(checkpoint, tmp_path / "hf")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["num_key_value_heads"] == 1 and not cfg["tie_word_embeddings"]
    assert verify_export(checkpoint, out) <= 1e-4
    ours, tok, _ = load_checkpoint(checkpoint)
    hf = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    hf_tok = AutoTokenizer.from_pretrained(str(out))
    prompt = "def main(self):\n    "
    ids = hf_tok(prompt, return_tensors="pt").input_ids
    assert ids[0].tolist() == tok.encode(prompt, add_special_tokens=False).ids  # same tokenizer
    with torch.no_grad():
        diff = (hf(ids).logits - ours(ids)[0]).abs().max().item()
        hf_greedy = hf.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert diff <= 1e-4
    expected = generate_text(ours, tok, prompt, 12, temperature=0)
    assert hf_tok.decode(hf_greedy[0, ids.shape[1]:]) == expected
    chat = hf_tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "user: hi\nassistant: "


def test_verification_catches_a_wrong_export(checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    out = export_hf(checkpoint, tmp_path / "hf")
    tensors = load_file(str(out / "model.safetensors"))
    name = "model.layers.1.mlp.down_proj.weight"
    tensors[name] = tensors[name] * 1.01  # a 1% error in one matrix must be caught
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="export verification failed"):
        verify_export(checkpoint, out)
