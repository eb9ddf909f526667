"""LiteLLM's proxy on the same upstream, with ``--litellm`` and where ``litellm`` is importable.

Its rows use the sync columns; the issue's target is gateway req/s at least
40x LiteLLM's, at 16 connections.
"""

from __future__ import annotations

import importlib.util
import urllib.request

from bench import gateway_config, services
from bench.payloads import CHAT_BODY, CHAT_PATH, headers
from bench.report import Section
from bench.scenarios import SYNC_COLUMNS, Context, load_problem, sync_row
from bench.services import Service

FIRST_REQUEST_TIMEOUT_S = 120.0  # LiteLLM imports more on its first request; give it time before timing anything


def first_request(proxy: Service) -> int:
    request = urllib.request.Request(proxy.url + CHAT_PATH, data=CHAT_BODY, headers=headers(), method="POST")
    with urllib.request.urlopen(request, timeout=FIRST_REQUEST_TIMEOUT_S) as resp:
        return int(resp.status)


def run(ctx: Context) -> Section:
    section = Section("litellm", "LiteLLM proxy (same upstream)", SYNC_COLUMNS)
    if not ctx.litellm:
        section.skipped = "not requested (pass --litellm)"
        return section
    if importlib.util.find_spec("litellm") is None:
        section.skipped = "litellm is not importable in this Python (pip install 'litellm[proxy]')"
        return section
    stack = ctx.stack
    assert stack.upstream is not None
    proxy = stack.spawn(services.litellm(stack.logs, gateway_config.litellm(stack.upstream.url)))
    problems = []
    try:
        status = first_request(proxy)
        if status != 200:
            section.failed = f"LiteLLM answered {status} to a first chat request"
            return section
        for connections in (1, 16):
            if connections not in ctx.plan.connections:
                continue
            result = ctx.load(proxy, connections)
            section.rows.append(sync_row("litellm", connections, [result]))
            problem = load_problem("litellm", connections, result)
            if problem:
                problems.append(problem)
    finally:
        stack.retire(proxy)
    section.notes.append("LiteLLM proxy, one worker, master key, no database, openai/ provider to the fake upstream.")
    section.failed = "; ".join(problems) or None
    return section
