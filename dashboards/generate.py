"""Writes the Grafana dashboards in this folder: ``python dashboards/generate.py`` (``--check`` only compares).

The JSON files are what Grafana loads (classic dashboard model, schemaVersion
39); this script is their source, so panels share one layout, one datasource
variable and one way of filtering by job. tests/observability evaluates every
query below against a real Prometheus scraping a live gateway.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 39
TAG = "llm-gateway"
DS = {"type": "prometheus", "uid": "${datasource}"}
J = 'job=~"$job"'
P = 'provider=~"$provider"'
RI = "[$__rate_interval]"
# The SLI of alerts.yaml: the gateway failed the request (rate_limited is its own saturation), out of the
# valid requests (client errors, cancellations and a client's own rate limits are the client's doing).
BAD = 'outcome=~"error|timeout|rate_limited"'
VALID = 'outcome!~"client_error|cancelled|throttled"'
MODE_MAPPINGS = [{"type": "value", "options": {
    "0": {"text": "normal", "color": "green", "index": 0},
    "1": {"text": "degraded", "color": "orange", "index": 1},
    "2": {"text": "shed", "color": "red", "index": 2},
}}]
CIRCUIT_MAPPINGS = [{"type": "value", "options": {
    "0": {"text": "closed", "color": "green", "index": 0},
    "1": {"text": "open", "color": "red", "index": 1},
}}]


def mode_level(selector: str, by: str) -> str:
    """0 normal, 1 degraded, 2 shed, from the one-hot ``gateway_mode`` gauge."""
    return (f'max by ({by}) (gateway_mode{{{selector},mode="degraded"}})'
            f' + 2 * max by ({by}) (gateway_mode{{{selector},mode="shed"}})')


class Layout:
    """Places panels left to right on Grafana's 24-column grid and numbers them."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"id": self._id(), "type": "row", "title": title, "collapsed": False, "panels": [],
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}})
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_h
            self.x = 0
            self.row_h = 0

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def targets(*queries: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"datasource": DS, "refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "range": True}
            for i, (expr, legend) in enumerate(queries)]


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


DASHED_THRESHOLDS = {
    "matcher": {"id": "byRegexp", "options": ".*threshold.*"},
    "properties": [
        {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
        {"id": "custom.fillOpacity", "value": 0},
    ],
}


def timeseries(title: str, description: str, queries: list[tuple[str, str]], unit: str, *,
               stack: bool = False, bars: bool = False, dashed_thresholds: bool = False,
               min_zero: bool = True) -> dict[str, Any]:
    custom: dict[str, Any] = {
        "drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 30 if (stack or bars) else 10,
        "showPoints": "never", "spanNulls": False, "axisPlacement": "auto",
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "off"},
    }
    defaults: dict[str, Any] = {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"},
                                "thresholds": thresholds(("green", None)), "mappings": []}
    if min_zero:
        defaults["min"] = 0
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DS,
        "targets": targets(*queries),
        "fieldConfig": {"defaults": defaults, "overrides": [DASHED_THRESHOLDS] if dashed_thresholds else []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def stat(title: str, description: str, expr: str, unit: str, *, legend: str = "",
         steps: tuple[tuple[str, float | None], ...] = (("green", None),),
         mappings: list[dict[str, Any]] | None = None, decimals: int | None = None) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit, "thresholds": thresholds(*steps), "mappings": mappings or [],
                                "color": {"mode": "thresholds"}}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat", "title": title, "description": description, "datasource": DS,
        "targets": targets((expr, legend)),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value", "graphMode": "area", "justifyMode": "auto", "orientation": "auto",
                    "textMode": "auto", "wideLayout": True, "showPercentChange": False},
    }


def state_timeline(title: str, description: str, expr: str, legend: str,
                   mappings: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "state-timeline", "title": title, "description": description, "datasource": DS,
        "targets": targets((expr, legend)),
        "fieldConfig": {"defaults": {"mappings": mappings, "color": {"mode": "thresholds"},
                                     "thresholds": thresholds(("green", None)),
                                     "custom": {"lineWidth": 0, "fillOpacity": 80}},
                        "overrides": []},
        "options": {"mergeValues": True, "showValue": "auto", "alignValue": "left", "rowHeight": 0.9,
                    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
                    "tooltip": {"mode": "single", "sort": "none"}},
    }


def query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name, "label": label, "type": "query", "datasource": DS, "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
        "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*", "sort": 1, "hide": 0, "regex": "",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [],
    }


def dashboard(uid: str, title: str, description: str, layout: Layout,
              extra_vars: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return {
        "id": None, "uid": uid, "title": title, "description": description, "tags": [TAG],
        "timezone": "browser", "editable": True, "graphTooltip": 1, "fiscalYearStartMonth": 0, "liveNow": False,
        "weekStart": "", "refresh": "30s", "schemaVersion": SCHEMA_VERSION, "version": 1,
        "time": {"from": "now-6h", "to": "now"}, "timepicker": {},
        "links": [{"type": "dashboards", "title": "Gateway dashboards", "tags": [TAG], "asDropdown": True,
                   "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False,
                   "tooltip": "", "url": ""}],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
             "regex": ""},
            query_variable("job", "Job", "label_values(gateway_build_info, job)"),
            *extra_vars,
        ]},
        "panels": layout.panels,
    }


def overview() -> dict[str, Any]:
    lay = Layout()
    lay.row("At a glance")
    lay.add(stat("Requests per second", "Every request the gateway answered, all tiers.",
                 f"sum(rate(gateway_requests_total{{{J}}}{RI}))", "reqps"), 6, 4)
    lay.add(stat("Interactive error ratio", "Interactive requests the gateway failed (5xx, 504, its own 429) over "
                 "valid ones: the SLI the burn-rate alerts watch (SLO 99.9%).",
                 f'sum(rate(gateway_requests_total{{{J},tier="interactive",{BAD}}}{RI}))'
                 f' / sum(rate(gateway_requests_total{{{J},tier="interactive",{VALID}}}{RI}))',
                 "percentunit", steps=(("green", None), ("orange", 0.001), ("red", 0.01))), 6, 4)
    lay.add(stat("Global mode", "The global mode; a provider's own mode is on the timeline below.",
                 mode_level(f'{J},scope="global"', "scope"), "none", mappings=MODE_MAPPINGS,
                 steps=(("green", None), ("orange", 1), ("red", 2))), 6, 4)
    lay.add(stat("Queued jobs", "Jobs waiting or running in every tier's queue.",
                 f"sum(max by (tier) (gateway_queue_depth{{{J}}}))", "short"), 6, 4)
    lay.row("RED per tier")
    lay.add(timeseries("Request rate by tier", "Requests answered per second.",
                       [(f"sum by (tier) (rate(gateway_requests_total{{{J}}}{RI}))", "{{tier}}")], "reqps"), 8, 8)
    lay.add(timeseries("Error ratio by tier", "Requests the gateway failed (5xx, 504, its own 429) over valid "
                       "requests (not client errors, cancellations or a client's own rate limits).",
                       [(f"sum by (tier) (rate(gateway_requests_total{{{J},{BAD}}}{RI}))"
                         f" / sum by (tier) (rate(gateway_requests_total{{{J},{VALID}}}{RI}))", "{{tier}}")],
                       "percentunit"), 8, 8)
    lay.add(timeseries("Latency by tier (p50, p95)", "Time to the end of the response, from the request histogram.",
                       [(f"histogram_quantile(0.95, sum by (tier, le) "
                         f"(rate(gateway_request_duration_seconds_bucket{{{J}}}{RI})))", "{{tier}} p95"),
                        (f"histogram_quantile(0.5, sum by (tier, le) "
                         f"(rate(gateway_request_duration_seconds_bucket{{{J}}}{RI})))", "{{tier}} p50")], "s"), 8, 8)
    lay.add(timeseries("Outcomes", "Requests by outcome, all tiers.",
                       [(f"sum by (outcome) (rate(gateway_requests_total{{{J}}}{RI}))", "{{outcome}}")], "reqps",
                       stack=True), 12, 8)
    lay.add(timeseries("In flight by tier", "Synchronous requests being served now.",
                       [(f"sum by (tier) (gateway_inflight{{{J}}})", "{{tier}}")], "short"), 12, 8)
    lay.row("Modes")
    lay.add(state_timeline("Effective mode by scope", "normal, degraded or shed; global and per provider.",
                           mode_level(J, "scope"), "{{scope}}", MODE_MAPPINGS), 16, 8)
    lay.add(timeseries("Mode transitions", "Mode changes, by scope, new mode and who made them.",
                       [(f"sum by (scope, to_mode, source) (increase(gateway_mode_transitions_total{{{J}}}{RI}))",
                         "{{scope}} -> {{to_mode}} ({{source}})")], "short", bars=True), 8, 8)
    lay.row("Deferrals and fallbacks")
    lay.add(timeseries("Deferrals by tier and reason",
                       "Requests handed to the queue: requested (Prefer: respond-async), async_tier, mode, saturated.",
                       [(f"sum by (tier, reason) (rate(gateway_deferrals_total{{{J}}}{RI}))", "{{tier}} {{reason}}")],
                       "reqps", stack=True), 12, 8)
    lay.add(timeseries("Fallbacks", "Moves from one target of a model to the next.",
                       [(f"sum by (model, from_target, to_target) (rate(gateway_fallbacks_total{{{J}}}{RI}))",
                         "{{model}}: {{from_target}} -> {{to_target}}")], "ops", stack=True), 12, 8)
    lay.row("Process")
    lay.add(timeseries("CPU", "CPU seconds per second, per process (1 = one core).",
                       [(f"rate(process_cpu_seconds_total{{{J}}}{RI})", "{{instance}}")], "percentunit"), 8, 7)
    lay.add(timeseries("Resident memory", "Resident set size per process.",
                       [(f"process_resident_memory_bytes{{{J}}}", "{{instance}}")], "bytes"), 8, 7)
    lay.add(timeseries("Event-loop lag (p99)", "How late the loop wakes a sleeper: time it was blocked.",
                       [(f"histogram_quantile(0.99, sum by (instance, le) "
                         f"(rate(gateway_event_loop_lag_seconds_bucket{{{J}}}{RI})))", "{{instance}}")], "s"), 8, 7)
    return dashboard("gateway-overview", "LLM gateway / Overview",
                     "RED per tier, the effective mode, deferrals and fallbacks.", lay)


def queue() -> dict[str, Any]:
    lay = Layout()
    lay.row("Queues")
    lay.add(timeseries("Queue depth by tier", "Jobs in each tier's queue, waiting or running (shared by replicas).",
                       [(f"max by (tier) (gateway_queue_depth{{{J}}})", "{{tier}}")], "short"), 8, 8)
    lay.add(timeseries("Oldest job age by tier", "Age of the oldest job in each tier's queue.",
                       [(f"max by (tier) (gateway_queue_oldest_age_seconds{{{J}}})", "{{tier}}")], "s"), 8, 8)
    lay.add(timeseries("Oldest age / max delay", "How much of its tier's max_delay_s the oldest job has used; "
                       "the queue-age alert fires at 75%.",
                       [(f"max by (tier) (gateway_queue_oldest_age_seconds{{{J}}})"
                         f" / max by (tier) (gateway_tier_max_delay_seconds{{{J}}})", "{{tier}}")],
                       "percentunit"), 8, 8)
    lay.row("Jobs")
    lay.add(timeseries("Jobs in (deferrals) by tier", "Requests handed to the queue per second.",
                       [(f"sum by (tier) (rate(gateway_deferrals_total{{{J}}}{RI}))", "{{tier}}")], "ops",
                       stack=True), 8, 8)
    lay.add(timeseries("Job completions by status", "Jobs reaching a terminal status per second.",
                       [(f"sum by (status) (rate(gateway_jobs_total{{{J}}}{RI}))", "{{status}}")], "ops",
                       stack=True), 8, 8)
    lay.add(timeseries("Job completions by path", "Terminal jobs per second by the path that served them.",
                       [(f"sum by (via, status) (rate(gateway_jobs_total{{{J}}}{RI}))", "{{via}} {{status}}")],
                       "ops", stack=True), 8, 8)
    lay.row("Dead letters and provider batches")
    lay.add(stat("Dead letters", "Jobs that failed max_attempts times.",
                 f"max(gateway_dead_letters{{{J}}})", "short", steps=(("green", None), ("orange", 1))), 6, 8)
    lay.add(timeseries("Dead letters over time", "Length of the dead-letter stream; growth is alerted on.",
                       [(f"max(gateway_dead_letters{{{J}}})", "dead letters")], "short"), 9, 8)
    lay.add(timeseries("Provider batches in flight", "Provider batch jobs submitted and not yet finished.",
                       [(f"max by (provider) (gateway_provider_batches_inflight{{{J}}})", "{{provider}}")],
                       "short"), 9, 8)
    return dashboard("gateway-queue", "LLM gateway / Queue & batches",
                     "Queue depth and age per tier, job completions, dead letters, provider batches.", lay)


def providers() -> dict[str, Any]:
    up = "gateway_upstream_requests_total"
    lay = Layout()
    lay.row("Health against the degradation thresholds")
    lay.add(timeseries("Upstream p95 latency", "p95 of upstream attempts; dashed: the configured thresholds.",
                       [(f"histogram_quantile(0.95, sum by (provider, le) "
                         f"(rate(gateway_upstream_duration_seconds_bucket{{{J},{P}}}{RI})))", "{{provider}}"),
                        (f"max by (edge) (gateway_degradation_p95_latency_threshold_seconds{{{J}}})",
                         "{{edge}} threshold")], "s", dashed_thresholds=True), 8, 8)
    lay.add(timeseries("429 ratio", "Share of upstream attempts answered 429; dashed: the configured thresholds.",
                       [(f'sum by (provider) (rate({up}{{{J},{P},status_class="429"}}{RI}))'
                         f" / sum by (provider) (rate({up}{{{J},{P}}}{RI}))", "{{provider}}"),
                        (f"max by (edge) (gateway_degradation_rate_limited_ratio_threshold{{{J}}})",
                         "{{edge}} threshold")], "percentunit", dashed_thresholds=True), 8, 8)
    lay.add(timeseries("Error ratio", "Share of upstream attempts that failed (5xx, timeout, no answer); "
                       "dashed: the configured thresholds.",
                       [(f'sum by (provider) (rate({up}{{{J},{P},status_class=~"5xx|timeout|error"}}{RI}))'
                         f" / sum by (provider) (rate({up}{{{J},{P}}}{RI}))", "{{provider}}"),
                        (f"max by (edge) (gateway_degradation_error_ratio_threshold{{{J}}})",
                         "{{edge}} threshold")], "percentunit", dashed_thresholds=True), 8, 8)
    lay.row("Latency and traffic")
    lay.add(timeseries("Time to first token (p50, p95)", "Upstream time to the first streamed event.",
                       [(f"histogram_quantile(0.95, sum by (provider, le) "
                         f"(rate(gateway_time_to_first_token_seconds_bucket{{{J},{P}}}{RI})))", "{{provider}} p95"),
                        (f"histogram_quantile(0.5, sum by (provider, le) "
                         f"(rate(gateway_time_to_first_token_seconds_bucket{{{J},{P}}}{RI})))", "{{provider}} p50")],
                       "s"), 12, 8)
    lay.add(timeseries("Upstream attempts by status class", "Attempts per second; retries and fallbacks each count.",
                       [(f"sum by (provider, status_class) (rate({up}{{{J},{P}}}{RI}))",
                         "{{provider}} {{status_class}}")], "reqps", stack=True), 12, 8)
    lay.row("Circuits and modes")
    lay.add(state_timeline("Circuit state", "Open while any target circuit of the provider is open.",
                           f"max by (provider) (gateway_circuit_open{{{J},{P}}})", "{{provider}}",
                           CIRCUIT_MAPPINGS), 12, 7)
    lay.add(state_timeline("Provider mode", "The mode of each provider's own scope.",
                           mode_level(f'{J},scope=~"$provider"', "scope"), "{{scope}}", MODE_MAPPINGS), 12, 7)
    lay.add(timeseries("Fallbacks away from each target", "Moves from a target to the next one.",
                       [(f"sum by (from_target, to_target) (rate(gateway_fallbacks_total{{{J}}}{RI}))",
                         "{{from_target}} -> {{to_target}}")], "ops", stack=True), 12, 7)
    lay.add(timeseries("Provider batches in flight", "Provider batch jobs submitted and not yet finished.",
                       [(f"max by (provider) (gateway_provider_batches_inflight{{{J},{P}}})", "{{provider}}")],
                       "short"), 12, 7)
    provider_var = query_variable("provider", "Provider", "label_values(gateway_circuit_open, provider)")
    return dashboard("gateway-providers", "LLM gateway / Providers",
                     "Upstream latency, TTFT, 429 and error ratios against the degradation thresholds, circuits.",
                     lay, (provider_var,))


def cost() -> dict[str, Any]:
    c, base, n = "gateway_cost_usd_total", "gateway_cost_baseline_usd_total", "gateway_metered_requests_total"
    lay = Layout()
    lay.row("Spend over the selected range")
    lay.add(stat("Spend at realtime prices", "Dollars paid at realtime prices.",
                 f'sum(increase({c}{{{J},pricing="realtime"}}[$__range]))', "currencyUSD", decimals=2), 6, 5)
    lay.add(stat("Spend at batch prices", "Dollars paid at provider-batch prices.",
                 f'sum(increase({c}{{{J},pricing="batch"}}[$__range])) or vector(0)', "currencyUSD",
                 decimals=2), 6, 5)
    lay.add(stat("Savings", "All-realtime baseline minus what was paid.",
                 f"sum(increase({base}{{{J}}}[$__range])) - sum(increase({c}{{{J}}}[$__range]))", "currencyUSD",
                 decimals=2), 6, 5)
    lay.add(stat("Cost per successful request", "Dollars per metered (served) request or job.",
                 f"sum(increase({c}{{{J}}}[$__range])) / sum(increase({n}{{{J}}}[$__range]))", "currencyUSD",
                 decimals=5), 6, 5)
    lay.row("Spend over time")
    lay.add(timeseries("Spend rate: realtime vs batch", "Dollars per hour, by price list.",
                       [(f"sum by (pricing) (rate({c}{{{J}}}{RI})) * 3600", "{{pricing}}")], "currencyUSD",
                       stack=True), 12, 8)
    lay.add(timeseries("Savings rate", "Dollars per hour saved against an all-realtime baseline.",
                       [(f"(sum(rate({base}{{{J}}}{RI})) - sum(rate({c}{{{J}}}{RI}))) * 3600", "savings")],
                       "currencyUSD"), 12, 8)
    lay.add(timeseries("Cost per successful request by model", "Dollars per metered request, per target model.",
                       [(f"sum by (provider, model) (rate({c}{{{J}}}{RI}))"
                         f" / sum by (provider, model) (rate({n}{{{J}}}{RI}))", "{{provider}}/{{model}}")],
                       "currencyUSD"), 12, 8)
    lay.add(timeseries("Spend rate by target", "Dollars per hour, per provider and model.",
                       [(f"sum by (provider, model) (rate({c}{{{J}}}{RI})) * 3600", "{{provider}}/{{model}}")],
                       "currencyUSD", stack=True), 12, 8)
    lay.add(timeseries("Tokens by direction and price list", "Tokens per second.",
                       [(f"sum by (direction, pricing) (rate(gateway_tokens_total{{{J}}}{RI}))",
                         "{{direction}} {{pricing}}")], "short", stack=True), 12, 8)
    lay.add(timeseries("Share of tokens at batch prices", "Batch-priced tokens over all tokens.",
                       [(f'sum(rate(gateway_tokens_total{{{J},pricing="batch"}}{RI}) or vector(0))'
                         f" / sum(rate(gateway_tokens_total{{{J}}}{RI}))", "batch share")], "percentunit"), 12, 8)
    return dashboard("gateway-cost", "LLM gateway / Cost",
                     "Spend at realtime and batch prices, savings, and cost per successful request.", lay)


DASHBOARDS = {"overview.json": overview, "queue.json": queue, "providers.json": providers, "cost.json": cost}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    stale = []
    for name, text in render().items():
        path = HERE / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale dashboards (run python dashboards/generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
