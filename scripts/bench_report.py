"""The ingest benchmark's report: the contenders' names and forms, each encoding's baseline and
target, the figures of a contender (median, range, ratio to its baseline, CPU), and the Markdown
tables scripts/bench puts into BENCHMARKS.md. Used by scripts/bench_ingest.py.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from bench_common import summarize
from bench_tables import Spec

RECORDS, CSV_BYTES, BINARY = ("asyncpg copy_records_to_table, one call",
                              "asyncpg copy_to_table, the same CSV bytes",
                              "raw COPY BINARY of the same data, pgpq-encoded Arrow")
PEER_ORM, PEER_CORE = "FastAPI peer, ORM add_all", "FastAPI peer, best form (insert(Model), rows)"
FORMS = {RECORDS: "records", CSV_BYTES: "CSV", BINARY: "binary"}
ENCODINGS = {  # BatchStream encoding -> (baseline, target ratio)
    "ROWS": (RECORDS, 0.6), "COLUMNAR": (RECORDS, 1.0), "CSV": (CSV_BYTES, 0.9),
    "ARROW": (BINARY, 0.9)}


def figures(c: Any, by_name: dict[str, Any]) -> dict[str, Any]:
    """What the report and the JSON say of a contender."""
    out: dict[str, Any] = {"name": c.name, "baseline": c.baseline, "target": c.target,
                           "rows": c.rows, "seconds": c.seconds, "status": c.status,
                           "form": FORMS.get(c.name)}
    if c.status != "ok" or not c.seconds:
        return out
    median, low, high = summarize(c.seconds, c.rows)
    out.update(median=median, min=low, max=high,
               cpu={k: statistics.median(s[k] for s in c.cpu) for k in c.cpu[0]})
    base = by_name.get(c.baseline or "")
    if base is not None and base.status == "ok" and base.seconds:
        runs = min(len(c.seconds), len(base.seconds))
        per_run = [(c.rows / c.seconds[i]) / (base.rows / base.seconds[i]) for i in range(runs)]
        out.update(ratio=statistics.median(per_run), ratio_min=min(per_run),
                   ratio_max=max(per_run), per_run=per_run)
    limit = by_name.get(BINARY)
    if limit is not None and limit.status == "ok" and limit.seconds:
        out["of_limit"] = median / summarize(limit.seconds, limit.rows)[0]
    return out


def table_lines(spec: Spec, results: list[dict[str, Any]]) -> list[str]:
    lines = [f"**{spec.key}** — {spec.describe}.", "",
             "| contender | its baseline | rows/s (median) | min-max | ratio to its baseline "
             "(per-run range) | target | ÷ raw COPY BINARY | CPU cores: client / batchd / "
             "postgres |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        if r["name"] in (PEER_ORM, PEER_CORE):
            continue
        base = "*(baseline)*" if r["form"] else (FORMS.get(r["baseline"]) or "")
        goal = f"≥ {r['target']:.1f}x" if r["target"] else ""
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {base} | {r['status']} | | | {goal} | | |")
            continue
        ratio = (f"{r['ratio']:.2f}x ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})"
                 if "ratio" in r else "1.00x" if r["form"] else "")
        if r["target"] and "ratio" in r:
            goal += " met" if r["ratio"] >= r["target"] else " missed"
        cpu = " / ".join(f"{r['cpu'].get(k, 0):.2f}" for k in ("client", "batchd", "postgres"))
        lines.append(f"| {r['name']} | {base} | {r['median']:,.0f} | {r['min']:,.0f}-"
                     f"{r['max']:,.0f} | {ratio} | {goal} | {r.get('of_limit', 0):.2f}x | "
                     f"{cpu} |")
    return lines


def summary_lines(tables: dict[str, list[dict[str, Any]]]) -> list[str]:
    keys = list(tables)
    lines = ["| BatchStream encoding | its baseline | target | "
             + " | ".join(f"{key} (per-run range)" for key in keys) + " |",
             "| --- | --- | ---: |" + " ---: |" * len(keys)]
    for enc, (baseline, goal) in ENCODINGS.items():
        cells = []
        for key in keys:
            r = next(r for r in tables[key] if r["name"] == f"BatchStream {enc}")
            cells.append(f"{r['ratio']:.2f}x ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}), "
                         f"{'met' if r['ratio'] >= goal else 'missed'}"
                         if "ratio" in r else r["status"])
        lines.append(f"| {enc} | {baseline} | ≥ {goal:.1f}x | " + " | ".join(cells) + " |")
    return lines


def peer_lines(results: list[dict[str, Any]], args: argparse.Namespace, info: str) -> list[str]:
    by_name = {r["name"]: r for r in results}
    if "median" not in by_name.get(PEER_ORM, {}) or "median" not in by_name.get(PEER_CORE, {}):
        return []
    orm, core = by_name[PEER_ORM]["median"], by_name[PEER_CORE]["median"]
    lines = ["", f"For context, the FastAPI peer on the narrow table: scripts/peer_app.py "
             f"(FastAPI + SQLAlchemy async + asyncpg, uvicorn with {info}, one process, pool of "
             f"16), the first {by_name[PEER_ORM]['rows']:,} rows (rows/s computed on those) as "
             f"1,000-row JSON lists validated by Pydantic, {args.peer_clients} concurrent "
             f"clients (httpx, one keep-alive connection each), each POST committed on its own.",
             "", "| contender | rows/s (median) | ratio to ORM peer (target ≥ 20x) | ratio to "
             "peer best form (target ≥ 8x) |",
             "| --- | ---: | ---: | ---: |",
             f"| {PEER_ORM} | {orm:,.0f} | 1.0x | {orm / core:.1f}x |",
             f"| {PEER_CORE} | {core:,.0f} | {core / orm:.1f}x | 1.0x |"]

    def cell(ratio: float, goal: float) -> str:
        return f"{ratio:.2f}x ({'met' if ratio >= goal else 'missed'})"
    for enc in ("ROWS", "COLUMNAR", "CSV", "ARROW"):
        r = by_name[f"BatchStream {enc}"]
        if "median" in r:
            lines.append(f"| BatchStream {enc} | {r['median']:,.0f} | "
                         f"{cell(r['median'] / orm, 20)} | {cell(r['median'] / core, 8)} |")
    return lines
