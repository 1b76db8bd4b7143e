"""Corpora, tokenizers, deterministic batches, the LR schedule, and resume == uninterrupted (pure torch, no Ray)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from training import data as data_mod
from training.config import ConfigError, TrainConfig, apply_overrides, fit_to_workers, preset
from training.worker_loop import local_reporter, lr_at, run_loop
from training.ray_trainer import prepare_run, read_metrics

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 40


def test_char_and_bpe_tokenizers_round_trip(tmp_path):
    char = data_mod.char_tokenizer(TEXT)
    ids = char.encode(TEXT[:80], add_special_tokens=False).ids
    assert len(ids) == 80 and char.decode(ids) == TEXT[:80]
    assert char.encode("Q~", add_special_tokens=False).ids[1] == char.token_to_id(data_mod.UNK)  # unseen char
    bpe = data_mod.bpe_tokenizer(TEXT, vocab_size=300)
    ids = bpe.encode(TEXT[:80], add_special_tokens=False).ids
    assert len(ids) < 40 and bpe.decode(ids) == TEXT[:80]  # merges learned: fewer tokens than chars
    bpe.save(str(tmp_path / "t.json"))
    assert data_mod.load_tokenizer(tmp_path / "t.json").decode(ids) == TEXT[:80]


def test_prepare_writes_memmapped_splits_and_batches_are_deterministic(tmp_path):
    (tmp_path / "c.txt").write_text(TEXT)
    meta = data_mod.prepare(tmp_path / "c.txt", tmp_path / "d", "char", 0, 10**6, block_size=16)
    assert meta["train_tokens"] + meta["val_tokens"] == len(TEXT)
    td = data_mod.TokenData(tmp_path / "d")
    x, y = td.batch("train", step=3, seed=1, n_seqs=8, block_size=16, index=slice(0, 8))
    assert x.shape == (8, 16) and torch.equal(x[:, 1:], y[:, :-1])
    # Rank slices of a step's global batch are the pieces of the 1-worker batch.
    a, _ = td.batch("train", 3, 1, 8, 16, slice(0, 4))
    b, _ = td.batch("train", 3, 1, 8, 16, slice(4, 8))
    assert torch.equal(torch.cat([a, b]), x)
    assert not torch.equal(td.batch("train", 4, 1, 8, 16, slice(0, 8))[0], x)


def test_bad_corpora_are_named(tmp_path, monkeypatch):
    with pytest.raises(data_mod.DataError, match="corpus not found"):
        data_mod.resolve_corpus(str(tmp_path / "nope"), "debug")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(data_mod.DataError, match="corpus is empty"):
        data_mod.read_corpus(tmp_path / "empty.txt", 1000)
    (tmp_path / "tiny.txt").write_text("abc")
    with pytest.raises(data_mod.DataError, match="corpus too small"):
        data_mod.prepare(tmp_path / "tiny.txt", tmp_path / "d", "char", 0, 1000, block_size=32)
    monkeypatch.setattr(data_mod, "SHARED_SHAKESPEARE", tmp_path / "missing.txt")
    with pytest.raises(data_mod.DataError, match="shakespeare corpus is not on this machine"):
        data_mod.resolve_corpus("auto", "shakespeare-char")
    assert data_mod.resolve_corpus("auto", "debug") == data_mod.default_corpus()  # stdlib: no download


def test_overrides_and_presets():
    cfg = apply_overrides(preset("shakespeare-char"), ["n_layer=4", "max_iters=200", "learning_rate=3e-4",
                                                       "num_kv_heads=2", "tie_embeddings=false"])
    assert (cfg.n_layer, cfg.max_iters, cfg.learning_rate, cfg.num_kv_heads, cfg.tie_embeddings) == (4, 200, 3e-4, 2, False)
    assert cfg.n_embd == 384 and cfg.dropout == 0.2  # nanoGPT's shakespeare-char shape
    with pytest.raises(ConfigError, match="unknown config field 'n_layers'"):
        apply_overrides(cfg, ["n_layers=3"])
    with pytest.raises(ConfigError, match="n_layer expects int, got 'four'"):
        apply_overrides(cfg, ["n_layer=four"])
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ConfigError, match="divisible by the number of workers"):
        replace(cfg, gradient_accumulation_steps=3).validate(world_size=2)
    fitted, note = fit_to_workers(replace(cfg, gradient_accumulation_steps=3), 2)
    assert fitted.gradient_accumulation_steps == 4 and "3 -> 4" in note
    assert fit_to_workers(cfg, 1) == (cfg, None)


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_iters=10, max_iters=110)
    lrs = [lr_at(cfg, i) for i in range(120)]
    assert lrs[0] < lrs[5] < lrs[9] < 1.0
    assert lrs[10] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.55) and lrs[115] == 0.1
    assert all(a >= b for a, b in zip(lrs[10:110], lrs[11:110]))


def _debug_run(tmp_path, name, **over):
    cfg = replace(preset("debug"), max_iters=8, eval_interval=4, max_corpus_bytes=60_000, dropout=0.1, **over)
    run = tmp_path / name
    cfg = prepare_run(cfg, run, "debug", 1)
    return cfg, run


def test_resume_continues_with_the_same_loss(tmp_path):
    cfg, full = _debug_run(tmp_path, "full")
    last = run_loop(cfg.to_dict(), 0, 1, torch.device("cpu"), full, local_reporter(full))
    assert last["iter"] == 8 and "val_loss" in last and last["sample"]
    losses_full = [r["loss"] for r in read_metrics(full)]
    # Stop at 4 (a checkpoint is written there), then resume in a new run dir from that checkpoint.
    half_cfg, half = _debug_run(tmp_path, "half")
    run_loop(replace(half_cfg, max_iters=4, lr_decay_iters=8).to_dict(), 0, 1, torch.device("cpu"), half, local_reporter(half))
    ckpt = half / "checkpoint_000004"
    assert json.loads((ckpt / "config.json").read_text())["vocab_size"] == cfg.vocab_size
    run_loop(cfg.to_dict(), 0, 1, torch.device("cpu"), half, local_reporter(half), resume=ckpt)
    losses_resumed = [r["loss"] for r in read_metrics(half)]
    assert len(losses_resumed) == 8
    # dropout is on: equal losses also prove the RNG state was restored with the weights and optimizer.
    assert losses_resumed == pytest.approx(losses_full, rel=1e-6, abs=1e-6)
    assert losses_full[-1] < losses_full[0]
