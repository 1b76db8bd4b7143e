"""Shot boundaries from frame signatures, and segments (the unit of temporal context) from shots.

A cut is a frame whose colour histogram differs from the previous frame's by more than `threshold` (half the
L1 distance, so 0 = identical, 1 = disjoint colours) *and* stands out from the recent frame-to-frame motion (so
a fast pan does not count as a cut). Works on every decoded frame (scene mode: cut placed to the frame) or on
sampled frames only (uniform / keyframe modes: cut placed to the sample interval).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Cut:
    t: float
    strength: float  # histogram distance at the cut, 0..1


@dataclass
class Segment:
    index: int
    start: float
    end: float
    cut: Cut | None  # the cut that opens this segment (None for the first one and for splits of a long shot)


def detect_cuts(signatures: list[tuple[float, np.ndarray]], threshold: float = 0.3, min_scene_s: float = 0.5,
                window: int = 8) -> list[Cut]:
    cuts: list[Cut] = []
    recent: list[float] = []
    for (_, prev), (t, cur) in zip(signatures, signatures[1:]):
        d = 0.5 * float(np.abs(cur - prev).sum()) / 3.0  # 3 channels, each summing to 1
        base = float(np.median(recent)) if recent else 0.0
        if d > threshold and d > 3 * base and (not cuts or t - cuts[-1].t >= min_scene_s):
            cuts.append(Cut(round(t, 4), round(d, 4)))
        recent = (recent + [d])[-window:]
    return cuts


def build_segments(duration: float, cuts: list[Cut], max_segment_s: float = 30.0) -> list[Segment]:
    """Shots between cuts; a shot longer than max_segment_s is split evenly (keeps speech context bounded)."""
    bounds = [(0.0, None)] + [(c.t, c) for c in cuts if 0 < c.t < duration]
    out: list[Segment] = []
    for i, (start, cut) in enumerate(bounds):
        end = bounds[i + 1][0] if i + 1 < len(bounds) else duration
        if end - start <= 1e-6:
            continue
        n = max(1, int(np.ceil((end - start) / max_segment_s - 1e-9)))
        step = (end - start) / n
        for k in range(n):
            out.append(Segment(len(out), round(start + k * step, 4), round(start + (k + 1) * step, 4),
                               cut if k == 0 else None))
    return out
