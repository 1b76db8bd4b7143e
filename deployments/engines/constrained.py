"""JSON-schema constrained decoding for the transformers engine, on lm-format-enforcer's token enforcer.

At each step only tokens that keep the output a valid prefix of a JSON document for the schema are allowed (what
llama.cpp's grammars do for the llamacpp engine), so `response_format` and tool calls hold by construction.
lm-format-enforcer's own transformers glue imports modules transformers 5 no longer has; this is the small part
of it Conductor needs: the vocabulary table (built once per tokenizer) and a `prefix_allowed_tokens_fn`.
"""

from __future__ import annotations

from typing import Any, Callable


def tokenizer_data(tokenizer: Any) -> Any:
    """Every regular token's text as it reads after another token (so word-start spaces are kept)."""
    from lmformatenforcer import TokenEnforcerTokenizerData

    special = set(tokenizer.all_special_ids)
    anchor = tokenizer.encode("0", add_special_tokens=False)[-1]
    regular = []
    for token in range(len(tokenizer)):
        if token in special:
            continue
        after_anchor = tokenizer.decode([anchor, token])[1:]
        alone = tokenizer.decode([token])
        regular.append((token, after_anchor, len(after_anchor) > len(alone)))

    def decode(tokens: list[int]) -> str:
        return tokenizer.decode(tokens).rstrip("\ufffd")  # a partial UTF-8 sequence is not text yet

    data = TokenEnforcerTokenizerData(regular, decode, tokenizer.eos_token_id, False, len(tokenizer))
    data.blank_tokens = frozenset(t for t, text, _ in regular if text and not text.strip())
    return data


def allowed_tokens_fn(data: Any, schema: dict[str, Any] | None, prompt_len: int) -> Callable[[int, Any], list[int]]:
    """For `model.generate(prefix_allowed_tokens_fn=...)`: the tokens allowed after what was generated so far."""
    from lmformatenforcer import JsonSchemaParser, TokenEnforcer

    enforcer = TokenEnforcer(data, JsonSchemaParser(schema))
    blank = data.blank_tokens

    def allowed(_batch: int, ids: Any) -> list[int]:
        tokens = enforcer.get_allowed_tokens(ids.tolist()[prompt_len:]).allowed_tokens
        # Whitespace between JSON tokens is where a weak model spends its budget (runs of "\r" between keys):
        # tokens that are only whitespace are left out (words keep their leading space: " York" is one token).
        return [t for t in tokens if t not in blank] or tokens

    return allowed
