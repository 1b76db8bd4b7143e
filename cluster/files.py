"""Record files written so that a crash or a concurrent reader never sees half of one.

`atomic_write` writes a temp file beside the target, fsyncs it, renames it over the target and fsyncs the folder:
readers see the old record or the new one, never a torn one. `read_json_records` is the matching reader for
listings: a record that cannot be read is skipped and logged, and never breaks the listing.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger("conductor.files")


def atomic_write(path: str | os.PathLike, data: str | bytes, mode: int = 0o644) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # some filesystems refuse to fsync a directory; the rename itself is still atomic
        pass


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps: Any) -> None:
    atomic_write(path, json.dumps(obj, **dumps))


def read_json(path: str | os.PathLike) -> Any | None:
    """The record at `path`, or None when it is missing or unreadable (logged: it should not happen)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("skipping unreadable record %s: %s", path, type(e).__name__)
        return None


def read_json_records(paths: Iterable[Path]) -> list[tuple[Path, Any]]:
    out = []
    for p in paths:
        rec = read_json(p)
        if rec is not None:
            out.append((p, rec))
    return out


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    """Rows of an append-only JSON-lines file; a torn last line (a crash mid-append) is skipped and logged."""
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            log.warning("skipping unreadable line %d of %s", n, p)
    return rows
