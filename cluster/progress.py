"""One console progress bar for every long CLI command (RAG ingestion, video ingest, training -- which feeds it from
metrics.jsonl): tqdm on stderr, so `--json` output on stdout stays one clean document, with the rate and the ETA.

The pipelines report progress through plain callbacks (`progress(done, total, msg)` for documents,
`progress(fraction, msg)` for video), which the Gradio tabs also receive; this adapts those to a bar.
"""

from __future__ import annotations

import sys
from typing import Any


class ConsoleProgress:
    """A context manager whose `count` and `fraction` methods are the pipelines' progress callbacks."""

    def __init__(self, desc: str, unit: str = "it", scale: int = 100):
        self.desc, self.unit, self.scale = desc, unit, scale
        self.bar: Any = None

    def __enter__(self) -> "ConsoleProgress":
        return self  # the bar appears with the first report: a command that fails first prints only its error

    def _bar(self, total: int) -> Any:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, file=sys.stderr, dynamic_ncols=True,
                            mininterval=0.5)
        return self.bar

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()

    def count(self, done: int, total: int, msg: str = "") -> None:
        """`done` of `total` items (documents, uploads)."""
        bar = self._bar(total)
        if bar.total != total:
            bar.total = total
        bar.n = min(done, total)
        bar.set_postfix_str(msg[:50], refresh=False)
        bar.refresh()

    def fraction(self, fraction: float, msg: str = "") -> None:
        """A 0..1 fraction of the whole job (video ingest reports segments this way); shown in `scale` steps."""
        self.count(int(max(0.0, min(1.0, fraction)) * self.scale), self.scale, msg)
