#!/usr/bin/env python3
"""Draw the ingest benchmark's ratios: each BatchStream encoding ÷ the raw COPY of its own form.

    .venv/bin/python scripts/bench_chart.py RESULTS.json [--out docs/bench-ingest.png]

RESULTS.json is what `scripts/bench_ingest.py --json-out` writes. One horizontal bar per
encoding and table (median ratio, whisker: the per-run ratios' range), a red mark at each
encoding's target, a grey line at 1.0 (as fast as the baseline); an encoding that failed or was
not run is labelled so instead of a bar. matplotlib (the `bench` extra); a small PNG.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

BASELINES = {"ROWS": "÷ copy_records_to_table", "COLUMNAR": "÷ copy_records_to_table",
             "CSV": "÷ copy_to_table, same CSV", "ARROW": "÷ raw COPY BINARY"}
COLORS = {"narrow": "#4c72b0", "realistic": "#dd8452"}


def draw(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = list(results["tables"])
    encodings = list(results["targets"])
    height = 0.8 / len(tables)
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.75 * len(encodings)), dpi=100)
    top = 0.0
    for i, enc in enumerate(encodings):
        y0 = len(encodings) - 1 - i
        for j, key in enumerate(tables):
            r = next(r for r in results["tables"][key] if r["name"] == f"BatchStream {enc}")
            y = y0 + 0.4 - height * (j + 0.5)
            if "ratio" not in r:
                status = r["status"]
                text = (status.split(":")[0] + ": " + status.split(":")[1].strip()
                        if status.startswith("fails") else "not run (no ENCODING_ARROW yet)"
                        if "ARROW" in status else status)
                ax.text(0.02, y, f"{key}: {text}", va="center", fontsize=8, color="#a00000")
                continue
            ratio, low, high = r["ratio"], r["ratio_min"], r["ratio_max"]
            ax.barh(y, ratio, height=height * 0.9, color=COLORS.get(key, "#888888"),
                    label=key if i == 0 or key not in ax.get_legend_handles_labels()[1]
                    else None)
            ax.errorbar(ratio, y, xerr=[[max(0.0, ratio - low)], [max(0.0, high - ratio)]],
                        fmt="none", ecolor="#333333", capsize=2, lw=0.8)
            target = results["targets"][enc]
            at = max(high, target) if abs(high - target) < 0.06 else high  # clear of the mark
            ax.text(at + 0.02, y, f"{ratio:.2f}x", va="center", fontsize=8)
            top = max(top, high)
        target = results["targets"][enc]
        ax.plot([target, target], [y0 - 0.45, y0 + 0.45], color="#c00000", lw=1.5, ls="--",
                label="target" if i == 0 else None)
        top = max(top, target)
    ax.axvline(1.0, color="#999999", lw=0.8, zorder=0)
    ax.set_yticks(range(len(encodings)))
    ax.set_yticklabels([f"{enc}\n{BASELINES.get(enc, '')}" for enc in reversed(encodings)],
                       fontsize=8)
    ax.set_xlim(0, max(1.25, top + 0.2))
    ax.set_xlabel("rows/s ÷ rows/s of the raw COPY of the same form (same run)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    runs = results["runs"]
    ax.set_title(f"BatchStream ingest ÷ raw COPY of its own form, {results['rows']:,} rows\n"
                 f"bar: median of {runs} per-run ratio{'s' * (runs != 1)}, whisker: their "
                 f"range; failures: see BENCHMARKS.md", fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="the JSON of scripts/bench_ingest.py --json-out")
    parser.add_argument("--out", default="docs/bench-ingest.png")
    args = parser.parse_args()
    out = Path(args.out)
    draw(json.loads(Path(args.results).read_text()), out)
    print(f"{out}: {out.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
