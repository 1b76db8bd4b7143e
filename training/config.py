"""The training run's settings: one flat dataclass (model + optimisation + data), presets, and `--set` parsing.

Flat like nanoGPT's config so `--set n_layer=4 --set learning_rate=3e-4` reaches any field; where a field means
what nanoGPT's does it has nanoGPT's name. `batch_size` is sequences per micro-step per worker;
`gradient_accumulation_steps` is the global number of micro-batches per optimizer step (split across workers, so
the global batch is batch_size * gradient_accumulation_steps sequences whatever the worker count).
"""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, fields, replace

from training.model import MODEL_PRESETS, GPTConfig


class ConfigError(ValueError):
    """A bad preset, field or value; the CLI prints it as a one-line error before any worker starts."""


@dataclass
class TrainConfig:
    # model (see training/model.py GPTConfig)
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    num_kv_heads: int | None = None
    intermediate_size: int | None = None
    dropout: float = 0.0
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    vocab_size: int = 0  # set from the tokenizer when the data is prepared
    # optimisation (nanoGPT names)
    batch_size: int = 12
    gradient_accumulation_steps: int = 1
    max_iters: int = 1000
    learning_rate: float = 6e-4
    min_lr: float = 6e-5
    warmup_iters: int = 100
    lr_decay_iters: int = 0  # 0 = max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables
    eval_interval: int = 250  # also the checkpoint interval
    eval_iters: int = 20
    log_interval: int = 1
    seed: int = 1337
    dtype: str = "auto"  # auto = bfloat16 autocast on CUDA, float32 on CPU
    compile: bool = False  # torch.compile the model (GPU)
    # data
    corpus: str = "auto"  # auto | stdlib | shakespeare | a file or folder path
    tokenizer: str = "char"  # char | bpe
    bpe_vocab_size: int = 4096
    max_corpus_bytes: int = 5_000_000
    # samples written at each eval
    sample_tokens: int = 200
    sample_prompt: str = "\n"
    # fault-injection for tests and demos: worker rank 0 dies once at this iteration (0 = never)
    crash_at_iter: int = 0

    def model_config(self) -> GPTConfig:
        return GPTConfig.from_dict(asdict(self))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def validate(self, world_size: int = 1) -> None:
        positive = ("batch_size", "gradient_accumulation_steps", "max_iters", "eval_interval", "eval_iters",
                    "log_interval", "bpe_vocab_size", "max_corpus_bytes")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.min_lr < 0:
            raise ConfigError("learning_rate must be > 0 and min_lr >= 0")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.tokenizer not in ("char", "bpe"):
            raise ConfigError(f"tokenizer must be char or bpe, got {self.tokenizer!r}")
        if self.gradient_accumulation_steps % world_size:
            raise ConfigError(
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps}) must be divisible by the number "
                f"of workers ({world_size})"
            )
        try:
            GPTConfig.from_dict({**asdict(self), "vocab_size": max(self.vocab_size, 1)})
        except ValueError as e:
            raise ConfigError(str(e)) from None


# Training settings per preset; the model shape comes from MODEL_PRESETS beside them.
TRAIN_PRESETS: dict[str, dict] = {
    "debug": dict(batch_size=8, max_iters=20, learning_rate=1e-3, min_lr=1e-4, warmup_iters=2, eval_interval=10,
                  eval_iters=2, tokenizer="char", corpus="auto", max_corpus_bytes=300_000, sample_tokens=40),
    # nanoGPT's config/train_shakespeare_char.py.
    "shakespeare-char": dict(batch_size=64, max_iters=5000, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
                             lr_decay_iters=5000, beta2=0.99, eval_interval=250, eval_iters=200, log_interval=10,
                             tokenizer="char", corpus="shakespeare"),
    "small": dict(batch_size=16, gradient_accumulation_steps=4, max_iters=2000, learning_rate=6e-4, min_lr=6e-5,
                  warmup_iters=100, eval_interval=250, eval_iters=20, log_interval=10, tokenizer="bpe",
                  bpe_vocab_size=8192, corpus="stdlib", max_corpus_bytes=20_000_000),
}
PRESETS = sorted(TRAIN_PRESETS)


def preset(name: str) -> TrainConfig:
    if name not in TRAIN_PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return TrainConfig(**MODEL_PRESETS[name], **TRAIN_PRESETS[name])


def fit_to_workers(cfg: TrainConfig, world_size: int) -> tuple[TrainConfig, str | None]:
    """Round gradient_accumulation_steps up to a multiple of the worker count (nanoGPT asserts instead).

    The global batch is batch_size * gradient_accumulation_steps sequences and each worker takes an equal share of
    the micro-batches, so `--workers 2` on a preset with 1 micro-batch needs 2. Returns the config and a notice.
    """
    g = cfg.gradient_accumulation_steps
    if g < 1 or g % world_size == 0:
        return cfg, None
    new = -(-g // world_size) * world_size
    note = (f"gradient_accumulation_steps {g} -> {new} so {world_size} workers share each step's micro-batches "
            f"evenly (global batch {cfg.batch_size * new} sequences)")
    return replace(cfg, gradient_accumulation_steps=new), note


def _field_types() -> dict[str, typing.Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


def _parse_value(name: str, tp, raw: str):
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:  # e.g. int | None
        if raw.strip().lower() in ("none", "null", ""):
            return None
        tp = next(a for a in args if a is not type(None))
    try:
        if tp is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            f = float(raw)
            if not f.is_integer():
                raise ValueError
            return int(f)  # accepts 1e3
        if tp is float:
            return float(raw)
        return raw.encode().decode("unicode_escape") if "\\" in raw else raw  # lets --set sample_prompt='\n' work
    except ValueError:
        raise ConfigError(f"{name} expects {tp.__name__}, got {raw!r}") from None


def apply_overrides(cfg: TrainConfig, pairs: typing.Iterable[str]) -> TrainConfig:
    """Apply `key=value` strings; unknown keys and badly typed values raise ConfigError naming them."""
    types_ = _field_types()
    changes = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if key not in types_:
            raise ConfigError(f"unknown config field {key!r} (see `conductor train --help-fields`)")
        changes[key] = _parse_value(key, types_[key], raw)
    return replace(cfg, **changes)


def describe_fields() -> str:
    defaults = TrainConfig()
    return "\n".join(f"{f.name} = {getattr(defaults, f.name)!r}" for f in fields(TrainConfig))
