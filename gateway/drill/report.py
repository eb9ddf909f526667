"""The drill report: ``report.json`` and a self-contained ``report.html`` with inline SVG plots.

Plots are drawn by matplotlib from the measured data (Agg backend, SVG with
text as paths, so the page needs no fonts or other assets and opens offline).
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

TIER_COLOURS = {"interactive": "#1f77b4", "standard": "#2ca02c", "background": "#9467bd"}
INCIDENT_COLOUR = "#d62728"
MODE_COLOURS = {"degraded": "#ff7f0e", "shed": "#8c564b"}


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: the SVG is inlined in HTML


def _colour(tier: str) -> str:
    return TIER_COLOURS.get(tier, "#7f7f7f")


def _shade(ax: Any, result: dict[str, Any], run: dict[str, Any]) -> None:
    window = result.get("incident_window")
    if window:
        ax.axvspan(window[0], window[1], color=INCIDENT_COLOUR, alpha=0.10, label="incident")
    seen = set()
    for band in run.get("mode_bands", []):
        mode = band["mode"]
        ax.axvspan(band["start"], band["end"], ymin=0.0, ymax=0.06, color=MODE_COLOURS.get(mode, "#bcbd22"),
                   alpha=0.8, label=None if mode in seen else f"{mode} ({band['scope']})")
        seen.add(mode)


def latency_plot(result: dict[str, Any]) -> str:
    """Sync latency of every request over time, per tier, one panel per run, incident and mode bands shaded."""
    runs = result["runs"]
    fig = Figure(figsize=(10, 2.8 * len(runs)))
    axes = fig.subplots(len(runs), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, run) in zip(axes, runs.items()):
        by_tier: dict[str, tuple[list[float], list[float]]] = {}
        for r in run["records"]:
            if not r["deferred"] and r["latency_s"] is not None and r["status"] is not None:
                xs, ys = by_tier.setdefault(r["tier"], ([], []))
                xs.append(r["t"])
                ys.append(max(r["latency_s"], 1e-3))
        for tier, (xs, ys) in sorted(by_tier.items()):
            ax.scatter(xs, ys, s=5, alpha=0.6, color=_colour(tier), label=f"{tier} (sync)", rasterized=False)
        _shade(ax, result, run)
        ax.set_yscale("log")
        ax.set_ylabel("latency (s)")
        ax.set_title(f"{name}: synchronous latency per request", fontsize=10, loc="left")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7, loc="upper right", ncol=3)
    axes[-1].set_xlabel("time since the load started (s)")
    return _svg(fig)


def queue_plot(result: dict[str, Any]) -> str:
    """Queue depth and oldest queued age per tier over time, sampled from /admin/status."""
    runs = result["runs"]
    fig = Figure(figsize=(10, 2.6 * len(runs)))
    axes = fig.subplots(len(runs), 2, sharex=True, squeeze=False)
    for row, (name, run) in zip(axes, runs.items()):
        samples = run["samples"]
        tiers = sorted({t for s in samples for t in s["queue"]})
        for tier in tiers:
            ts = [s["t"] for s in samples if tier in s["queue"]]
            row[0].plot(ts, [s["queue"][tier]["depth"] for s in samples if tier in s["queue"]],
                        color=_colour(tier), label=tier)
            row[1].plot(ts, [s["queue"][tier]["oldest_age_s"] for s in samples if tier in s["queue"]],
                        color=_colour(tier), label=tier)
        for ax, label in zip(row, ("queue depth (jobs)", "oldest queued (s)")):
            _shade(ax, result, run)
            ax.set_ylabel(label)
            ax.set_title(f"{name}: {label}", fontsize=10, loc="left")
            ax.grid(True, alpha=0.25)
            if tiers:
                ax.legend(fontsize=7, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("time since the load started (s)")
    return _svg(fig)


def cost_plot(result: dict[str, Any]) -> str:
    """Spend per tier and run, split into realtime and batch prices."""
    runs = result["runs"]
    tiers = sorted({t for run in runs.values() for t in run["summary"]["tiers"]})
    fig = Figure(figsize=(8, 3.2))
    ax = fig.subplots()
    width = 0.8 / max(len(runs), 1)
    for i, (name, run) in enumerate(runs.items()):
        xs = [j + i * width for j in range(len(tiers))]
        rt = [run["summary"]["tiers"].get(t, {}).get("spend_realtime_usd", 0.0) for t in tiers]
        bt = [run["summary"]["tiers"].get(t, {}).get("spend_batch_usd", 0.0) for t in tiers]
        hatch = "" if i == 0 else "//"
        ax.bar(xs, rt, width, color="#1f77b4", hatch=hatch, edgecolor="white", label=f"{name}: realtime price")
        ax.bar(xs, bt, width, bottom=rt, color="#2ca02c", hatch=hatch, edgecolor="white", label=f"{name}: batch price")
    ax.set_xticks([j + width * (len(runs) - 1) / 2 for j in range(len(tiers))], tiers)
    ax.set_ylabel("spend (USD)")
    ax.set_title("spend per tier: realtime vs batch price", fontsize=10, loc="left")
    ax.grid(True, axis="y", alpha=0.25)
    ax.legend(fontsize=7)
    return _svg(fig)


def _fmt(x: Any, unit: str = "", nd: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}{unit}"
    return f"{x}{unit}"


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x * 1000:.0f} ms"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.2f}%"


def summary_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The comparison table: one row per tier and run."""
    head = ["tier", "run", "requests", "success", "sync p95 calm", "sync p95 incident", "incident/calm", "deferred",
            "completed", "lost", "spend (USD)", "of which batch", "USD per success"]
    rows = []
    tiers = sorted({t for run in result["runs"].values() for t in run["summary"]["tiers"]})
    for tier in [*tiers, "all"]:
        for name, run in result["runs"].items():
            s = run["summary"]["all"] if tier == "all" else run["summary"]["tiers"].get(tier)
            if s is None:
                continue
            rows.append([tier, name, str(s["sent"]), _pct(s["success_ratio"]), _ms(s["sync"]["calm"]["p95"]),
                         _ms(s["sync"]["incident"]["p95"]), _fmt(s["sync"]["p95_incident_over_calm"], "x", 2),
                         str(s["deferred"]), _pct(s["completion_ratio"]), str(s["lost"]), f"{s['spend_usd']:.4f}",
                         f"{s['spend_batch_usd']:.4f}", _fmt(s["cost_per_success_usd"], "", 6)])
    return head, rows


def markdown_table(result: dict[str, Any]) -> str:
    head, rows = summary_rows(result)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_summary(result: dict[str, Any]) -> str:
    head, rows = summary_rows(result)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    out.append("")
    for t in result["targets"]:
        out.append(f"{'met   ' if t['met'] else 'MISSED'} {t['target']}: {t['value']}")
    return "\n".join(out)


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}
td:first-child,td:nth-child(2){text-align:left}.met{color:#176d1a}.missed{color:#b00;font-weight:bold}
figure{margin:1em 0}figure svg{max-width:100%;height:auto}code{background:#f3f3f3;padding:0 3px}
"""


def render_html(result: dict[str, Any], latency_svg: str | None = None) -> str:
    sc = result["scenario"]
    head, rows = summary_rows(result)
    targets = "".join(
        f"<li class=\"{'met' if t['met'] else 'missed'}\">{'met' if t['met'] else 'MISSED'}: "
        f"{html.escape(t['target'])} (value: {html.escape(str(t['value']))})</li>" for t in result["targets"])
    audit_rows = [[run, _fmt(tr["t"], " s", 1), tr["scope"], f"{tr['from']} → {tr['to']}", str(tr["source"]),
                   tr.get("reason") or ""] for run, r in result["runs"].items() for tr in r["mode_timeline"]]
    incident_rows = [[run, _fmt(i["t"], " s", 1), i["provider"], i["label"], json.dumps(i["change"])]
                     for run, r in result["runs"].items() for i in r["incidents"]]
    window = result.get("incident_window")
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>Drill report: {html.escape(sc['name'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>Incident drill: {html.escape(sc['name'])}</h1>",
        f"<p>{html.escape(sc.get('description') or '')}</p>",
        f"<p>Generated {html.escape(result['generated_at'])} on {html.escape(result['machine'])}. "
        f"{sc['duration_s']:g} s of load per run; incident window "
        f"{'none' if not window else f'{window[0]:g}–{window[1]:g} s'}.</p>",
        "<h2>Targets (hybrid run)</h2>", f"<ul>{targets}</ul>",
        "<h2>Summary</h2>", _table(head, rows),
        "<h2>Latency over time</h2><figure id=plot-latency>", latency_svg or latency_plot(result), "</figure>",
        "<h2>Queue</h2><figure id=plot-queue>", queue_plot(result), "</figure>",
        "<h2>Cost</h2><figure id=plot-cost>", cost_plot(result), "</figure>",
        "<h2>Mode transitions (audit)</h2>",
        _table(["run", "time", "scope", "transition", "source", "reason"], audit_rows) if audit_rows
        else "<p>No mode transitions.</p>",
        "<h2>Incident timeline as applied</h2>",
        _table(["run", "time", "provider", "event", "change"], incident_rows) if incident_rows
        else "<p>No incidents.</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=1))
    latency = latency_plot(result)
    (out / "latency.svg").write_text(latency)  # the plot the README shows
    (out / "report.html").write_text(render_html(result, latency))
