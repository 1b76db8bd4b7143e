"""Architecture facts from tensor shapes (+ config/GGUF metadata when present), each with its evidence.

Rule: shapes prove what they can; config keys fill in what shapes cannot; anything neither can show stays None
with a note saying why (e.g. head count when the only attention tensor is a fused q/k/v projection).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from apps.detective.headers import TensorInfo
from apps.detective.roles import Role



@dataclass
class Facts:
    values: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    notes: list[str] = field(default_factory=list)
    features: dict[str, Any] = field(default_factory=dict)

    def set(self, key: str, value: Any, *evidence: str | None) -> None:
        self.values[key] = value
        self.evidence[key].extend(e for e in evidence if e)

    def get(self, key: str) -> Any:
        return self.values.get(key)


@dataclass
class Tensors:
    """Tensors indexed by role: `first(role)` is the first layer's tensor of that role (weights before biases)."""

    items: list[tuple[str, TensorInfo, Role]]

    def __post_init__(self) -> None:
        self.by_role: dict[str, list[tuple[str, TensorInfo, Role]]] = defaultdict(list)
        for item in sorted(self.items, key=lambda x: (x[2].layer if x[2].layer is not None else -1, x[2].bias)):
            self.by_role[item[2].role].append(item)
        self.layers = sorted({r.layer for _, _, r in self.items if r.layer is not None})
        self.patterns: set[str] = set()

    def first(self, role: str, component: str | None = None, bias: bool = False):  # type: ignore[no-untyped-def]
        for item in self.by_role.get(role, []):
            if item[2].bias == bias and (component is None or item[2].component == component):
                return item
        return None

    def has(self, role: str, bias: bool | None = None, component: str | None = None) -> bool:
        return any((bias is None or r.bias == bias) and (component is None or r.component == component)
                   for _, _, r in self.by_role.get(role, []))

    def component(self, comp: str) -> list[tuple[str, TensorInfo, Role]]:
        return [i for i in self.items if i[2].component == comp]


def ev(item: tuple[str, TensorInfo, Role] | None) -> str | None:
    return f"{item[0]} {list(item[1].shape)}" if item else None


def out_features(info: TensorInfo, hidden: int | None) -> int:
    """Output width of a projection: Linear stores [out, in]; GPT-2's Conv1D stores [in, out]."""
    s = info.shape
    if len(s) == 3:  # fused experts [E, out, in]
        return s[1]
    if len(s) < 2 or hidden is None:
        return s[0]
    if s[1] == hidden:
        return s[0]
    return s[1] if s[0] == hidden else s[0]


def in_features(info: TensorInfo, hidden: int | None) -> int:
    s = info.shape
    if len(s) == 3:
        return s[2]
    if len(s) < 2:
        return s[0]
    if hidden is not None and s[0] == hidden and s[1] != hidden:
        return s[1]
    if hidden is not None and s[1] == hidden and s[0] != hidden:
        return s[0]  # Conv1D o-proj stores [in, out]
    return s[1]

