"""`make bench`: run every benchmark module, print each Conductor-vs-baseline ratio, and rewrite BENCHMARKS.md.

Each `benchmarks/bench_<area>.py` defines `run(quick: bool) -> list[dict]`; a row is
  {"name": str, "conductor": float, "baseline": float, "unit": str, "higher_is_better": bool,
   "goal": str, "notes": str}
Ratios are always "Conductor / baseline" for higher-is-better units and "baseline / Conductor" otherwise, so
> 1 means Conductor is better. Results persist per area in benchmarks/results.json, so one area can be re-run
(`python -m benchmarks.run --only rag`) without losing the others' latest figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results.json"
AREAS = ["serving", "hardening", "gateway", "training", "detective", "rag", "rag_quality", "video", "agent"]


def ratio(row: dict) -> float | None:
    c, b = row.get("conductor"), row.get("baseline")
    if not c or not b:
        return None
    return c / b if row.get("higher_is_better", True) else b / c


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, no GPU, Python {platform.python_version()}"


def render(results: dict) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Each row compares Conductor with its baseline **in the same run**. Ratio > 1 means Conductor is better",
        "(for times and latencies the ratio is baseline / Conductor). Regenerate with `make bench`",
        "(`.venv/bin/python -m benchmarks.run [--only AREA] [--quick]`).",
        "",
    ]
    for area in AREAS + sorted(set(results) - set(AREAS)):
        if area not in results:
            continue
        res = results[area]
        lines += [f"## {area}", "", f"- command: `{res['command']}`", f"- machine: {res['machine']}",
                  f"- when: {res['when']}", ""]
        if res.get("error"):
            lines += [f"**failed:** `{res['error']}`", ""]
            continue
        lines += ["| benchmark | Conductor | baseline | unit | ratio | goal | notes |", "|---|---|---|---|---|---|---|"]
        for row in res["rows"]:
            r = ratio(row)
            fmt = lambda v: "—" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
            lines.append(
                f"| {row['name']} | {fmt(row.get('conductor'))} | {fmt(row.get('baseline'))} | {row.get('unit', '')} "
                f"| {'—' if r is None else f'{r:.2f}×'} | {row.get('goal', '')} | {row.get('notes', '')} |"
            )
        lines.append("")
    extra = ROOT / "benchmarks" / "EXTRA.md"
    if extra.is_file():
        lines += [extra.read_text().rstrip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.run")
    ap.add_argument("--only", action="append", help="area(s) to run; default all")
    ap.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    args = ap.parse_args(argv)
    failed = 0
    for area in args.only or AREAS:
        try:
            mod = importlib.import_module(f"benchmarks.bench_{area}")
        except ModuleNotFoundError as e:
            print(f"[{area}] skipped: {e}")
            continue
        print(f"=== {area}", flush=True)
        entry = {"command": "python -m benchmarks.run --only " + area + (" --quick" if args.quick else ""),
                 "machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        try:
            entry["rows"] = mod.run(quick=args.quick)
            for row in entry["rows"]:
                r = ratio(row)
                print(f"  {row['name']}: conductor={row.get('conductor')} baseline={row.get('baseline')} "
                      f"{row.get('unit', '')} ratio={'n/a' if r is None else f'{r:.2f}x'}  goal {row.get('goal', '')}")
        except Exception as e:  # one failing area must not lose the others' figures
            traceback.print_exc()
            entry["error"] = f"{type(e).__name__}: {e}"
            failed += 1
        # Re-read just before writing: another `--only` run may have finished meanwhile.
        results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        results[area] = entry
        RESULTS.write_text(json.dumps(results, indent=2))
        (ROOT / "BENCHMARKS.md").write_text(render(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
