"""Corpora, tokenizers and memory-mapped token files.

Any text file or folder is a corpus. The default corpus needs no download: the Python standard library's own
source, present on every machine with Python. Two tokenizers, both kept as a `tokenizers.Tokenizer` so a run saves
one `tokenizer.json` and export hands it to transformers unchanged:
- `char`: one token per character seen in the corpus (nanoGPT's shakespeare-char), plus `<|endoftext|>` and `<unk>`;
- `bpe`: byte-level BPE trained in-process on the corpus with the `tokenizers` library.
Tokens are written once as uint16/uint32 `train.bin` / `val.bin` (90/10 split) and memory-mapped by every worker.
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np

EOS = "<|endoftext|>"
UNK = "<unk>"
TEXT_SUFFIXES = {".txt", ".md", ".py", ".rst", ".json", ".csv", ".html", ".tex", ".c", ".h", ".js", ".yaml", ".yml"}
SHARED_SHAKESPEARE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "tinyshakespeare.txt"


class DataError(ValueError):
    """Bad corpus or data files; the CLI prints the message as a one-line error."""


def default_corpus() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def resolve_corpus(corpus: str | None, preset: str) -> Path:
    """`stdlib` / None -> the Python stdlib; `shakespeare` -> ../shared/data/tinyshakespeare.txt when present."""
    if corpus in (None, "", "auto"):
        corpus = "shakespeare" if preset == "shakespeare-char" else "stdlib"
    if corpus == "stdlib":
        return default_corpus()
    if corpus == "shakespeare":
        if SHARED_SHAKESPEARE.is_file():
            return SHARED_SHAKESPEARE
        raise DataError(
            "the shakespeare corpus is not on this machine (expected ../shared/data/tinyshakespeare.txt); "
            "download tinyshakespeare.txt and pass --set corpus=PATH, or use --set corpus=stdlib"
        )
    p = Path(corpus).expanduser()
    if not p.exists():
        raise DataError(f"corpus not found: {p}")
    return p


def read_corpus(path: Path, max_bytes: int) -> str:
    """Concatenate the text files under path (sorted, so runs are reproducible) up to max_bytes."""
    files = [path] if path.is_file() else sorted(
        f for f in path.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES and "site-packages" not in f.parts
    )
    parts, total = [], 0
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary or unreadable files in a folder corpus are skipped, not fatal
        parts.append(text)
        total += len(text)
        if total >= max_bytes:
            break
    text = "\n".join(parts)[:max_bytes]
    if len(text.strip()) == 0:
        raise DataError(f"corpus is empty: {path} (no readable text files)")
    return text


def char_tokenizer(text: str):
    from tokenizers import Tokenizer, decoders, models

    chars = sorted(set(text))
    vocab = {EOS: 0, UNK: 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    # A BPE model with no merges is exactly a character vocabulary; Fuse joins tokens back without spaces.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tok.add_special_tokens([EOS, UNK])
    tok.decoder = decoders.Fuse()
    return tok


def bpe_tokenizer(text: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_chunks(text), trainer=trainer, length=None)
    return tok


def _chunks(text: str, size: int = 1 << 16):
    for i in range(0, len(text), size):
        yield text[i : i + size]


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception on bad JSON
        raise DataError(f"cannot read tokenizer {path}: {e}") from None


def encode(tok, text: str) -> np.ndarray:
    dtype = np.uint16 if tok.get_vocab_size() < 2**16 else np.uint32
    ids: list[int] = []
    for chunk in _chunks(text, 1 << 20):  # chunked: fine for BPE since chunk borders are rare mid-word
        ids.extend(tok.encode(chunk, add_special_tokens=False).ids)
    return np.asarray(ids, dtype=dtype)


def prepare(corpus: Path, out_dir: Path, tokenizer: str, vocab_size: int, max_bytes: int, block_size: int) -> dict:
    """Tokenize the corpus into out_dir/{tokenizer.json,train.bin,val.bin,meta.json}; return the meta dict."""
    text = read_corpus(corpus, max_bytes)
    if tokenizer == "char":
        tok = char_tokenizer(text)
    elif tokenizer == "bpe":
        tok = bpe_tokenizer(text, vocab_size)
    else:
        raise DataError(f"unknown tokenizer {tokenizer!r}: use char or bpe")
    ids = encode(tok, text)
    n_val = max(len(ids) // 10, block_size + 2)
    train, val = ids[:-n_val], ids[-n_val:]
    if len(train) < block_size + 2:
        raise DataError(
            f"corpus too small: {len(ids)} tokens, need at least {2 * (block_size + 2)} for block_size {block_size}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    train.tofile(out_dir / "train.bin")
    val.tofile(out_dir / "val.bin")
    meta = {"vocab_size": tok.get_vocab_size(), "dtype": str(ids.dtype), "train_tokens": int(len(train)),
            "val_tokens": int(len(val)), "corpus": str(corpus), "tokenizer": tokenizer}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


class TokenData:
    """Memory-mapped train/val tokens with deterministic batches.

    The sequences of optimizer step `it` are drawn from a generator seeded by (seed, it), so the global batch of a
    step does not depend on the number of workers or on where a run was resumed: rank r takes its slice of it.
    That is what makes 2-worker DDP equal 1 worker, and a resumed run equal an uninterrupted one.
    """

    def __init__(self, data_dir: Path):
        meta = json.loads((Path(data_dir) / "meta.json").read_text())
        self.splits = {s: np.memmap(Path(data_dir) / f"{s}.bin", dtype=meta["dtype"], mode="r") for s in ("train", "val")}

    def batch(self, split: str, step: int, seed: int, n_seqs: int, block_size: int, index: slice):
        import torch

        data = self.splits[split]
        g = torch.Generator().manual_seed(seed * 1_000_003 + step * 2 + (split == "val"))
        starts = torch.randint(len(data) - block_size - 1, (n_seqs,), generator=g)[index].tolist()
        x = torch.from_numpy(np.stack([data[i : i + block_size].astype(np.int64) for i in starts]))
        y = torch.from_numpy(np.stack([data[i + 1 : i + 1 + block_size].astype(np.int64) for i in starts]))
        return x, y
