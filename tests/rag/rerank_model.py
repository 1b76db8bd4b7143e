"""A GGUF that llama.cpp loads as a reranker, written from the packaged SmolLM2, for the reranker tests.

No reranker ships in a package here (shared/MODELS.md), and a GGUF reranker (bge-reranker, Qwen3-Reranker) is what a
user would name in `rag.reranker`. This writes one in the layout llama.cpp gives Qwen3-Reranker conversions: the
`qwen3` architecture, rank pooling, and a two-label classification head ("yes", "no") taken from the model's own
token embeddings, so relevance is how much more the last position points at "yes" than at "no". Qwen3 normalises
queries and keys per head, which SmolLM2 does not, so unit norms are added: the model runs, its scores are
deterministic and differ between passages, and they are not meant to be good. What the tests prove is the path: a
GGUF file in the config, llama.cpp's rerank endpoint, scores mapped back to the right passages.
"""

from __future__ import annotations

from pathlib import Path


def _value(field):  # type: ignore[no-untyped-def]
    import gguf

    if field.types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    if field.types[0] == gguf.GGUFValueType.ARRAY:
        if field.types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    return field.parts[field.data[0]].tolist()[0]


def write_rerank_gguf(dst: Path) -> Path:
    import gguf
    import numpy as np

    from deployments.packaged import smollm2_gguf

    src = gguf.GGUFReader(str(smollm2_gguf()))
    arch = "qwen3"
    out = gguf.GGUFWriter(str(dst), arch)
    header = {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count", "general.architecture"}
    for name, field in src.fields.items():
        if name in header:
            continue
        key = arch + name[len("llama"):] if name.startswith("llama.") else name
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        out.add_key_value(key, _value(field), field.types[0], sub_type=sub)
    out.add_key_value(f"{arch}.pooling_type", int(gguf.PoolingType.RANK), gguf.GGUFValueType.UINT32)
    out.add_key_value(f"{arch}.classifier.output_labels", ["yes", "no"], gguf.GGUFValueType.ARRAY,
                      sub_type=gguf.GGUFValueType.STRING)
    head_dim = _value(src.fields["llama.embedding_length"]) // _value(src.fields["llama.attention.head_count"])
    tokens = _value(src.fields["tokenizer.ggml.tokens"])
    embeddings = None
    for t in src.tensors:
        out.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
        if t.name.endswith(".attn_q.weight"):
            block = t.name.removesuffix(".attn_q.weight")
            out.add_tensor(f"{block}.attn_q_norm.weight", np.ones(head_dim, np.float32))
            out.add_tensor(f"{block}.attn_k_norm.weight", np.ones(head_dim, np.float32))
        if t.name == "token_embd.weight":
            embeddings = gguf.quants.dequantize(t.data, t.tensor_type)  # (vocab, n_embd)
    assert embeddings is not None
    head = np.stack([embeddings[tokens.index("yes")], embeddings[tokens.index("no")]]).astype(np.float32)
    out.add_tensor("cls.output.weight", head)  # (2, n_embd): one row per label
    out.write_header_to_file()
    out.write_kv_data_to_file()
    out.write_tensors_to_file()
    out.close()
    return dst
