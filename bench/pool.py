"""Pool several ``bench/run.py`` results into one report (table, targets, JSON, chart).

    python bench/pool.py RUN1.json RUN2.json ... [--json OUT.json] [--png OUT.png]

Pairing is kept: every ratio is still taken inside one round of one run (rounds are
renumbered run*100 + round), and the medians and min-max spreads are then over all pairs of
all runs. On a shared machine single runs of 3 pairs disagree; the pooled figures, together
with the per-run medians printed first, are what bench/README.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run as bench  # noqa: E402


def pool(paths: list[str]) -> dict:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    parts: dict[str, list[dict]] = {"fuse": [], "inprocess": [], "decrypt_vs_cat": []}
    for i, r in enumerate(runs):
        for key, samples in parts.items():
            for s in r[key]["samples"]:
                samples.append(dict(s, run=i + 1, round=i * 100 + s["round"]))
    fuse, inproc, dec = parts["fuse"], parts["inprocess"], parts["decrypt_vs_cat"]
    res = {
        "meta": {
            "pooled_from": [{"file": p, "started": r["meta"]["started"], "pairs": r["meta"]["pairs"],
                             "duration_s": r["meta"].get("duration_s"),
                             "loadavg_start": r["machine"].get("loadavg_start"),
                             "loadavg_end": r["machine"].get("loadavg_end"),
                             "target_medians": {t["target"]: round(t["median"], 3) for t in r["targets"]}}
                            for p, r in zip(paths, runs, strict=True)],
            "size_bytes": runs[0]["meta"]["size_bytes"],
            "pairs": sum(r["meta"]["pairs"] for r in runs),
            "configs": runs[0]["meta"]["configs"],
            "workloads": runs[0]["meta"]["workloads"],
            "note": "samples of all runs; 'round' = run*100 + round, so ratios stay paired within a round",
        },
        "machine": runs[0]["machine"],
        "verification": {f"run{i + 1}": r["verification"] for i, r in enumerate(runs)},
        "fuse": {"samples": fuse, "summary": bench.summarize_fuse(fuse)},
        "inprocess": {"samples": inproc,
                      "summary": bench.summarize_variants(inproc, "openssl-multi2-16384")},
        "decrypt_vs_cat": {"samples": dec,
                           "summary": bench.summarize_variants(dec, "gocryptfs-cat-to-file")},
        "targets": bench.evaluate_targets(fuse, inproc, dec),
    }
    return res


def print_per_run(res: dict) -> None:
    runs = res["meta"]["pooled_from"]
    head = "".join(f"{'run ' + str(i + 1):>7}" for i in range(len(runs)))
    print(f"{'target (median of paired ratios)':<72}{head}{'pooled':>8}")
    for t in res["targets"]:
        per = "".join(f"{r['target_medians'].get(t['target'], float('nan')):7.2f}" for r in runs)
        print(f"{t['target'][:71]:<72}{per}{t['median']:8.2f}")


def rounded(value, digits: int = 3):
    """Floats rounded to ``digits`` decimals (timings stay far above the clock's resolution)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def compact_json(res: dict) -> str:
    """One sample per line, floats rounded: small enough to keep in git, still greppable."""
    res = rounded(res)
    lines = ["{"]
    keys = list(res)
    for n, key in enumerate(keys):
        value = res[key]
        end = "," if n < len(keys) - 1 else ""
        if isinstance(value, dict) and "samples" in value:
            lines.append(f' "{key}": {{"summary": {json.dumps(value["summary"], separators=(",", ":"))},')
            lines.append('  "samples": [')
            for i, s in enumerate(value["samples"]):
                comma = "," if i < len(value["samples"]) - 1 else ""
                lines.append("   " + json.dumps(s, separators=(",", ":")) + comma)
            lines.append(f"  ]}}{end}")
        else:
            lines.append(f' "{key}": {json.dumps(value, separators=(",", ":"))}{end}')
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="results.json files written by bench/run.py")
    p.add_argument("--json", type=Path, help="write the pooled results here")
    p.add_argument("--png", type=Path, help="draw the pooled ratio chart here")
    args = p.parse_args(argv)
    res = pool(args.runs)
    print_per_run(res)
    bench.print_report(res)
    if args.json:
        args.json.write_text(compact_json(res))
        json.loads(args.json.read_text())  # round-trip check
    if args.png:
        bench.draw_chart(res, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
