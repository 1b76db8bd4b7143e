"""The CLIP path on a tiny randomly initialised CLIP built from a config (no weights exist offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: the 256 symbols a byte-level BPE vocab must contain."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    d = tmp_path_factory.mktemp("tiny-clip")
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"))
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                            crop_size={"height": 32, "width": 32}), tokenizer=tok)
    cfg = CLIPConfig(text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64,
                                  "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 77,
                                  "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"]},
                     vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                    "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
                     projection_dim=16)
    CLIPModel(cfg).save_pretrained(d)
    proc.save_pretrained(d)
    return str(d)


def test_embedder_shapes_and_norms(tiny_clip):
    from deployments.vision import VisionEmbedder

    e = VisionEmbedder(tiny_clip)
    imgs = [np.full((40, 60, 3), c, np.uint8) for c in (0, 128, 255)]
    iv, tv = e.embed_images(imgs), e.embed_texts(["a red frame", "text"])
    assert iv.shape == (3, 16) and tv.shape == (2, 16) and e.dim == 16
    assert np.allclose(np.linalg.norm(iv, axis=1), 1, atol=1e-4)
    assert not np.allclose(iv[0], iv[2])


def test_disabled_says_why():
    from deployments.vision import DISABLED, build_vision, vision_status

    assert vision_status({}) == DISABLED and build_vision({}) is None


def test_clip_vectors_in_the_library(tiny_clip, std_clip, tmp_path):
    """With a vision model configured, segments get a `clip` vector and search asks it (text-to-frame)."""
    from apps.video.index import VideoIndex
    from cluster.config import VideoConfig

    index = VideoIndex(VideoConfig(data_dir=str(tmp_path), vision_model=tiny_clip, asr_model="none", ocr=False),
                       location=":memory:")
    try:
        index.ingest([str(std_clip.path)])
        assert index.store.has_clip
        hits = index.search("a blue screen", k=3)
        assert len(hits) == 3 and all("clip" in h["scores"] for h in hits)
    finally:
        index.close()
