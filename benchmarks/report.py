"""Render a benchmark results file as a Markdown report and a PNG chart of speed-ups.

``gpuframe bench report results.json [--out-dir DIR]`` (or ``python -m gpuframe.benchmarks.report``)
writes ``DIR/report.md`` and ``DIR/speedup.png``. The speed-up of gpuframe against a peer is
``peer median / gpuframe median`` (above 1: gpuframe is faster), computed from the medians in
the file, so the report never disagrees with the JSON.
"""
from __future__ import annotations

import argparse
import os
import textwrap
from dataclasses import dataclass
from typing import Any, Optional, Sequence

try:  # run as ``gpuframe.benchmarks.report`` (installed) or as a script from ``benchmarks/``
    from .common import format_rows, format_seconds, load_results
except ImportError:  # pragma: no cover - script mode
    from common import format_rows, format_seconds, load_results  # type: ignore[no-redef]

OURS = "gpuframe"
REPORT_NAME = "report.md"
CHART_NAME = "speedup.png"
# A log axis once the speed-ups span more than this factor (bars under 1x stay visible).
LOG_SPAN = 20.0


@dataclass(frozen=True)
class Row:
    """One line of the summary table (one benchmark case)."""

    benchmark: str
    case: str
    ours_s: Optional[float]
    best_peer: Optional[str]
    best_peer_s: Optional[float]
    speedup: Optional[float]
    target: Optional[float]
    met: Optional[bool]
    checked: bool
    target_text: Optional[str] = None  # a target that is not a speed-up (e.g. "target_s=2")


def engine_label(result: dict) -> str:
    """``polars`` + variant ``lazy`` -> ``"polars/lazy"``."""
    variant = result.get("variant") or ""
    engine = result.get("engine", "?")
    return f"{engine}/{variant}" if variant else str(engine)


def _other_target(rec: dict) -> Optional[str]:
    """A record's own target when it is not a speed-up: ``target_s=2``, ``target_ratio_max=1.5``..."""
    items = [f"{k}={_num(v)}" for k, v in rec.items()
             if k.startswith("target_") and k != "target_speedup" and not k.endswith("_met") and v is not None]
    return ", ".join(items) or None


def _other_met(rec: dict) -> Optional[bool]:
    """``target_met``, or every ``target_*_met`` flag of the record (None when it has none)."""
    if rec.get("target_met") is not None:
        return bool(rec["target_met"])
    flags = [v for k, v in rec.items() if k.startswith("target_") and k.endswith("_met") and v is not None]
    return all(bool(v) for v in flags) if flags else None


def _rate(x: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _best(results: Sequence[dict]) -> Optional[dict]:
    timed = [r for r in results if r.get("median_s") is not None]
    return min(timed, key=lambda r: r["median_s"]) if timed else None


def summary_rows(records: Sequence[dict]) -> list[Row]:
    """One :class:`Row` per record, recomputing the speed-up from the medians."""
    rows = []
    for rec in records:
        results = rec.get("results", [])
        mine = _best([r for r in results if r.get("engine") == OURS])
        peer = _best([r for r in results if r.get("engine") != OURS])
        speedup = (peer["median_s"] / mine["median_s"]) if (mine and peer and mine["median_s"] > 0) else None
        target = rec.get("target_speedup")
        met = None if (speedup is None or target is None) else speedup >= target
        other = None
        if target is None and _other_met(rec) is not None:
            # a record with its own kind of target (compile time, memory, speed-up against one peer)
            other = _other_target(rec)
            met = _other_met(rec)
        rows.append(Row(str(rec["benchmark"]), str(rec["case"]), mine["median_s"] if mine else None,
                        engine_label(peer) if peer else None, peer["median_s"] if peer else None,
                        speedup, target, met, bool(rec.get("checked", False)), other))
    return rows


def format_speedup(x: Optional[float]) -> str:
    if x is None:
        return "—"
    if x >= 100:
        return f"{x:.0f}×"
    if x >= 10:
        return f"{x:.1f}×"
    if x >= 0.1:
        return f"{x:.2f}×"
    return f"{x:.2g}×"


def _met(m: Optional[bool]) -> str:
    return "—" if m is None else ("yes" if m else "**no**")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(records: Sequence[dict]) -> str:
    """The summary table: benchmark, case, gpuframe median, best peer, speed-up, target, met?."""
    lines = ["| benchmark | case | gpuframe median | best peer | peer median | speed-up | target | met? |",
             "|---|---|---:|---|---:|---:|---:|:---:|"]
    for r, rec in zip(summary_rows(records), records):
        case = r.case + ("" if r.checked else " (unchecked)") + (" (outputs not all kept)"
                                                                 if rec.get("outputs_kept") is False else "")
        lines.append(
            f"| {_cell(r.benchmark)} | {_cell(case)} | {format_seconds(r.ours_s)} | {_cell(r.best_peer or '—')} "
            f"| {format_seconds(r.best_peer_s)} | {format_speedup(r.speedup)} "
            f"| {_cell(r.target_text) if r.target_text else '—' if r.target is None else format_speedup(r.target)} "
            f"| {_met(r.met)} |")
    return "\n".join(lines)


def _details(records: Sequence[dict]) -> list[str]:
    out = []
    for rec in records:
        results = rec.get("results", [])
        mine = _best([r for r in results if r.get("engine") == OURS])
        out += ["", f"### {_cell(str(rec['benchmark']))}: {_cell(str(rec['case']))}", ""]
        params = rec.get("params") or {}
        if params:
            out += ["Parameters: " + ", ".join(f"`{k}={_fmt_param(v)}`" for k, v in params.items()), ""]
        extra = {k: v for k, v in rec.items() if k not in _RECORD_KEYS}
        if extra:
            out += ["Also recorded: " + ", ".join(f"`{k}={_num(v)}`" for k, v in extra.items()), ""]
        kept = keep_alive_text(rec)
        if kept:
            out += [kept, ""]
        untimed = [r for r in results if r.get("median_s") is None]
        timed = [r for r in results if r.get("median_s") is not None]
        for r in untimed:  # results that are not timings (compile time, memory...): their fields as they are
            fields = ", ".join(f"`{k}={_num(v)}`" for k, v in r.items() if k not in ("engine", "variant"))
            out.append(f"- {_cell(engine_label(r)) if 'engine' in r else 'result'}: {fields}")
        if untimed:
            out.append("")
        if not timed:
            continue
        out += ["| engine | median | min | max | runs | rows/s | time vs gpuframe |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for r in sorted(timed, key=lambda r: r["median_s"]):
            ratio = (r["median_s"] / mine["median_s"]) if (mine and r.get("median_s") is not None
                                                           and mine["median_s"] > 0) else None
            tps = r.get("tuples_per_s")
            out.append(
                f"| {_cell(engine_label(r))} | {format_seconds(r.get('median_s'))} | {format_seconds(r.get('min_s'))} "
                f"| {format_seconds(r.get('max_s'))} | {len(r.get('times_s') or [])} "
                f"| {'—' if not tps else _rate(tps)} "
                f"| {format_speedup(ratio)} |")
    return out


_RECORD_KEYS = {"benchmark", "case", "params", "results", "checked", "best_peer", "speedup_vs_best_peer",
                "target_speedup", "target_met", "outputs_kept", "keep_alive"}


def keep_alive_text(rec: dict) -> Optional[str]:
    """One sentence on whether the record's outputs were kept alive during its timing (None when
    the record does not say: an older file, or a benchmark that times something else)."""
    if rec.get("outputs_kept") is None:
        return None
    k = rec.get("keep_alive") or {}
    size = k.get("output_bytes_per_round")
    size_text = f", {size / 2**20:,.1f} MiB a round of all engines" if isinstance(size, (int, float)) else ""
    if rec["outputs_kept"]:
        return (f"Outputs kept alive: all {k.get('outputs_per_engine', '?')} per engine (warm-up included) until "
                f"the last round{size_text}.")
    return f"Outputs **not all kept alive**: {_cell(str(k.get('note', 'fewer kept (no note recorded)')))}."


def keep_alive_summary(records: Sequence[dict]) -> Optional[str]:
    """A line for the report's head: in how many timed cases every output was kept alive."""
    flagged = [r for r in records if r.get("outputs_kept") is not None]
    if not flagged:
        return None
    short = [f"{r['benchmark']}/{r['case']}" for r in flagged if not r["outputs_kept"]]
    text = (f"Outputs kept alive (as a program keeps its results: no round writes into a freed result's pages, "
            f"the first timed call counts): every output of every engine in {len(flagged) - len(short)} of "
            f"{len(flagged)} cases that record it")
    if short:
        text += "; fewer kept, for lack of memory, in " + ", ".join(_cell(s) for s in short) + " (see Details)"
    return text + "."


def _fmt_param(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 1000:
        return format_rows(v)
    return str(v)


def markdown(doc: dict, chart: Optional[str] = None) -> str:
    """The whole report: machine, summary table, skipped/failed benchmarks, per-case details."""
    m = doc.get("machine") or {}
    versions = m.get("versions") or {}
    gpus = m.get("gpus") or []
    lines = ["# gpuframe benchmark report", ""]
    lines.append(f"- created: {doc.get('created', '?')}")
    if doc.get("command"):
        lines.append(f"- command: `{doc['command']}`")
    lines.append(f"- machine: {m.get('cpu_model', '?')}, {m.get('cpu_count', '?')} cores, "
                 f"{m.get('memory_gib', '?')} GiB; GPUs: {', '.join(gpus) if gpus else 'none'}")
    if versions:
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    seconds = doc.get("seconds") or {}
    if seconds:
        lines.append("- wall time per benchmark: " + ", ".join(f"{k} {format_seconds(v)}" for k, v in seconds.items())
                     + f" (total {format_seconds(sum(seconds.values()))})")
    lines += ["", "Speed-up = best peer's median time / gpuframe's median time (above 1×: gpuframe is faster). "
              "Every peer's answer was checked against gpuframe's before its time was kept.", ""]
    records = doc.get("records", [])
    kept = keep_alive_summary(records)
    if kept:
        lines += [kept, ""]
    lines.append(markdown_table(records) if records else "_No benchmark records in this file._")
    if chart:
        lines += ["", f"![speed-up of gpuframe against each peer]({chart})"]
    for key, title, field in (("skipped", "Skipped benchmarks", "reason"), ("errors", "Failed benchmarks", "error")):
        items = doc.get(key) or []
        if items:
            lines += ["", f"## {title}", ""]
            lines += [f"- **{_cell(str(it.get('benchmark', '?')))}**: {_cell(str(it.get(field, '')))}" for it in items]
    notes = doc.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {_cell(str(n))}" for n in notes]
    if records:
        lines += ["", "## Details"] + _details(records)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- chart
def chart_data(records: Sequence[dict]) -> tuple[list[tuple[str, str, Optional[float]]], dict[str, list[Optional[float]]]]:
    """``(cases, series)``: cases as ``(benchmark, case, target)`` and, per peer label, the speed-up
    of gpuframe against that peer in each case (``None`` where the peer did not run)."""
    cases: list[tuple[str, str, Optional[float]]] = []
    series: dict[str, list[Optional[float]]] = {}
    for rec in records:
        results = rec.get("results", [])
        mine = _best([r for r in results if r.get("engine") == OURS])
        peers = [r for r in results if r.get("engine") != OURS and r.get("median_s") is not None]
        if mine is None or not peers or mine["median_s"] <= 0:
            continue
        idx = len(cases)
        cases.append((str(rec["benchmark"]), str(rec["case"]), rec.get("target_speedup")))
        for r in peers:
            col = series.setdefault(engine_label(r), [None] * idx)
            col.extend([None] * (idx - len(col)))
            col.append(r["median_s"] / mine["median_s"])
    for col in series.values():
        col.extend([None] * (len(cases) - len(col)))
    return cases, series


def use_log_scale(values: Sequence[float]) -> bool:
    """True when the speed-ups span more than :data:`LOG_SPAN` (or reach 100x)."""
    vals = [v for v in values if v is not None and v > 0]
    if not vals:
        return False
    return max(vals) / min(vals) > LOG_SPAN or max(vals) >= 100


def _peer_colors(labels: Sequence[str]) -> dict[str, Any]:
    """One hue per engine (``polars``), lighter shades for its variants (``polars/lazy``)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_rgb

    base = colormaps["tab10"]
    engines = list(dict.fromkeys(lab.split("/", 1)[0] for lab in labels))
    colors = {}
    for i, eng in enumerate(engines):
        rgb = to_rgb(base(i % 10))
        members = [lab for lab in labels if lab.split("/", 1)[0] == eng]
        for j, lab in enumerate(members):
            mix = 0.6 * j / max(len(members) - 1, 1) if len(members) > 1 else 0.0
            colors[lab] = tuple(c + (1 - c) * mix for c in rgb)
    return colors


def plot(records: Sequence[dict], path: str, title: str = "gpuframe speed-up against each peer") -> Optional[str]:
    """Write a horizontal grouped bar chart (one group per case, one bar per peer) to ``path``.

    Returns ``path``, or ``None`` when no record has both gpuframe and a peer timed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    cases, series = chart_data(records)
    if not cases:
        return None
    labels = list(series)
    colors = _peer_colors(labels)
    benchmarks = list(dict.fromkeys(b for b, _, _ in cases))
    # bars per case: only the peers that ran in it, so groups stay compact
    per_case = [[lab for lab in labels if series[lab][i] is not None] for i in range(len(cases))]
    n_cases = {b: sum(1 for c in cases if c[0] == b) for b in benchmarks}
    n_bars = {b: sum(max(len(per_case[i]), 1) for i, c in enumerate(cases) if c[0] == b) for b in benchmarks}
    units = {b: 0.24 * n_bars[b] + 0.4 * n_cases[b] + 0.9 for b in benchmarks}
    # legend entries first: their number and length decide how much room the legend needs
    has_target = any(tgt for _, _, tgt in cases)
    names = [f"vs {lab}" for lab in labels] + ["parity (1×)"] + (["target speed-up"] if has_target else [])
    longest = max(len(n) for n in names)
    ncol = max(1, min(len(names), int(120 // (longest + 8))))
    legend_h = 0.2 * -(-len(names) // ncol) + 0.15
    title_h = 0.5
    fig_h = max(sum(units.values()) + 0.7 + legend_h + title_h, 3.5)
    fig, axes = plt.subplots(len(benchmarks), 1, figsize=(11, fig_h), squeeze=False,
                             gridspec_kw={"height_ratios": [units[b] for b in benchmarks]})
    bar_h = 0.8
    label_box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 0.6}
    for ax, bench in zip(axes[:, 0], benchmarks):
        idx = [i for i, c in enumerate(cases) if c[0] == bench]
        vals = [series[lab][i] for i in idx for lab in per_case[i]]
        targets = [cases[i][2] for i in idx if cases[i][2]]
        # each panel gets its own scale: one huge speed-up elsewhere must not flatten this one
        log = use_log_scale(vals + targets + [1.0])
        lo = min(vals + [1.0])
        hi = max(vals + targets + [1.0])
        y = 0.0
        ticks, ticklabels = [], []
        for i in idx:
            _, case, target = cases[i]
            labs = per_case[i]
            n = max(len(labs), 1)
            step = bar_h / n
            for j, lab in enumerate(labs):
                v = series[lab][i]
                yy = y + j * step
                # log scale: bars grow from parity (1x), left when gpuframe is slower
                base = 1.0 if log else 0.0
                ax.barh(yy, v - base, height=step * 0.88, left=base, color=colors[lab], zorder=3)
                right = v >= base if log else True
                pad = (1.06 if right else 1 / 1.06) if log else None
                xt = v * pad if log else v + hi * 0.012
                # the peer's name next to the value: shades of one engine's variants look alike
                text = f"{format_speedup(v)}  {lab}" if right else f"{lab}  {format_speedup(v)}"
                ax.text(xt, yy, text, va="center", ha="left" if right else "right",
                        fontsize=7, bbox=label_box, zorder=6)
            ticks.append(y + (n - 1) * step / 2)
            ticklabels.append("\n".join(textwrap.wrap(case, 34)) or "(case)")
            if target:
                ax.plot([target, target], [y - step / 2, y + (n - 0.5) * step], color="crimson",
                        linestyle="--", linewidth=1.6, zorder=5)
            y += n * step + 0.4
        ax.set_yticks(ticks)
        ax.set_yticklabels(ticklabels, fontsize=8.5)
        ax.set_ylim(y - 0.4 + 0.1, -bar_h / max(len(per_case[idx[0]]), 1) / 2 - 0.1)
        ax.axvline(1.0, color="0.25", linewidth=1.0, zorder=4)
        ax.set_title(bench + ("  (log scale)" if log else ""), loc="left", fontsize=11, fontweight="bold")
        ax.grid(axis="x", color="0.88", which="major")
        ax.set_axisbelow(True)
        if log:
            ax.set_xscale("log")
            # room for the labels: a decade and a half beyond the longest bar on each side
            ax.set_xlim(lo / (30 if lo < 1 else 2.2), hi * 30)
        else:
            ax.set_xlim(0, hi * 1.55)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[-1, 0].set_xlabel("speed-up of gpuframe = peer median time / gpuframe median time  (right of the 1× line: "
                           "gpuframe is faster)", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[lab]) for lab in labels]
    handles.append(Line2D([0], [0], color="0.25", linewidth=1.0))
    if has_target:
        handles.append(Line2D([0], [0], color="crimson", linestyle="--", linewidth=1.6))
    fig.suptitle(title, fontsize=13, y=1.0 - 0.1 / fig_h, va="top")
    fig.legend(handles, names, loc="upper center", ncol=ncol, fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 1.0 - title_h / fig_h))
    fig.tight_layout(rect=(0, 0, 1, 1.0 - (title_h + legend_h) / fig_h))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render(results_path: str, out_dir: Optional[str] = None) -> tuple[str, Optional[str]]:
    """Write ``report.md`` and ``speedup.png`` for ``results_path`` into ``out_dir``.

    ``out_dir`` defaults to the folder of the results file. Returns ``(markdown path, chart path
    or None when there is nothing to plot)``.
    """
    doc = load_results(results_path)
    out_dir = out_dir or os.path.dirname(os.path.abspath(results_path))
    os.makedirs(out_dir, exist_ok=True)
    chart = plot(doc["records"], os.path.join(out_dir, CHART_NAME))
    md_path = os.path.join(out_dir, REPORT_NAME)
    with open(md_path, "w") as f:
        f.write(markdown(doc, chart=os.path.basename(chart) if chart else None))
    return md_path, chart


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description="Render a gpuframe benchmark results file as Markdown and a PNG chart.")
    p.add_argument("results", help="results JSON written by a benchmark (--out)")
    p.add_argument("--out-dir", default=None, help="where report.md and speedup.png go (default: next to the JSON)")
    args = p.parse_args(argv)
    md, png = render(args.results, args.out_dir)
    print(md)
    if png:
        print(png)


if __name__ == "__main__":
    main()


__all__ = ["Row", "chart_data", "engine_label", "format_speedup", "keep_alive_summary", "keep_alive_text", "markdown",
           "markdown_table", "plot", "render", "summary_rows", "use_log_scale"]
