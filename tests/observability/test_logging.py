"""Logs of a live gateway: one JSON access line per request with the fields SREs need, never a secret.

Also: ``server.log_format: text`` gives readable lines, and ``server.log_level:
warning`` silences the access log.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import BATCH_KEY, CLIENT_KEY, base_config, fallback_models
from tests.support.jobs import namespace, submit_job, wait_for
from tests.support.sdk import sdk
from tests.support.upstream import Behaviour

SECRET_PROMPT = "observability-secret-prompt-6e1f"
ACCESS_FIELDS = {"request_id", "client", "route", "tier", "mode", "model", "target", "attempts", "status",
                 "latency_ms", "input_tokens", "output_tokens", "cost_usd"}


def config(upstream: Any, redis_url: str, **server: Any) -> dict[str, Any]:
    cfg = base_config(upstream, redis_url)
    cfg["server"] = {"log_format": "json", **server}
    cfg["models"].update(fallback_models("logfb"))
    cfg["queue"] = {"namespace": namespace("logs"), "mini_batch_wait_s": 0.05}
    return cfg


@pytest.fixture(scope="module")
def gateway(make_module_gateway, upstream_server, redis_server):
    return make_module_gateway(config(upstream_server, redis_server.url))


@pytest.fixture(scope="module")
def client(gateway):
    with sdk(gateway, CLIENT_KEY) as c:
        yield c


def access_lines(gw: Any, expect: int = 1) -> list[dict[str, Any]]:
    """Every access line so far, parsed (waiting briefly for the last ones to reach the file)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(line) for line in gw.log().splitlines() if '"logger":"gateway.access"' in line]
        if len(lines) >= expect or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def line_for(gw: Any, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = [line for line in access_lines(gw) if line.get("request_id") == request_id]
        if found:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no access line for {request_id}:\n{gw.log()}")


def test_a_served_request_has_one_line_with_every_field(gateway, client):
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hello"}], extra_headers={"X-Request-Id": "log-ok-1"})
    assert raw.headers["x-request-id"] == "log-ok-1"
    line = line_for(gateway, "log-ok-1")
    assert ACCESS_FIELDS <= set(line)
    assert line["level"] == "info" and line["logger"] == "gateway.access" and isinstance(line["ts"], float)
    assert line["client"] == "web"
    assert line["route"] == "chat/completions"
    assert line["tier"] == "interactive"
    assert line["mode"] == "normal"
    assert line["model"] == "chat"
    assert line["target"] == "primary/p-chat"
    assert line["attempts"] == 1
    assert line["status"] == 200
    assert 0 < line["latency_ms"] < 5000
    assert (line["input_tokens"], line["output_tokens"]) == (7, 5)  # the fake upstream's usage
    assert line["cost_usd"] == pytest.approx((7 * 1.0 + 5 * 2.0) / 1_000_000)


def test_a_fallback_shows_its_attempts_and_final_target(gateway, client, upstream):
    upstream.default("p-logfb", Behaviour(status=500))
    client.chat.completions.create(
        model="logfb", messages=[{"role": "user", "content": "hello"}], extra_headers={"X-Request-Id": "log-fb-1"})
    line = line_for(gateway, "log-fb-1")
    assert line["target"] == "secondary/s-logfb"
    assert line["attempts"] == 3 and line["status"] == 200


def test_a_streamed_request_is_logged_when_it_ends_with_its_usage(gateway, client):
    list(client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hello"}], stream=True,
        extra_headers={"X-Request-Id": "log-stream-1"}))
    line = line_for(gateway, "log-stream-1")
    assert line["status"] == 200 and (line["input_tokens"], line["output_tokens"]) == (7, 5)
    assert line["cost_usd"] > 0


def test_a_refused_request_is_logged_without_a_client(gateway):
    r = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "chat", "messages": []},
                   headers={"Authorization": "Bearer sk-wrong", "X-Request-Id": "log-401-1"})
    assert r.status_code == 401
    line = line_for(gateway, "log-401-1")
    assert line["status"] == 401 and line["client"] == "-" and line["tier"] == "-"
    assert line["attempts"] == 0 and line["input_tokens"] is None and line["cost_usd"] == 0


def test_a_queued_request_is_logged_as_accepted(gateway):
    job = submit_job(gateway, BATCH_KEY, "chat", extra_headers={"X-Request-Id": "log-202-1"})
    line = line_for(gateway, "log-202-1")
    assert line["status"] == 202 and line["client"] == "batch" and line["tier"] == "background"
    assert wait_for(gateway, BATCH_KEY, job)["status"] == "succeeded"


def test_every_line_is_json_and_no_prompt_completion_or_key_appears(gateway, client, upstream):
    c = client
    secret = [{"role": "user", "content": SECRET_PROMPT}]
    reply = c.chat.completions.create(model="chat", messages=secret)
    completion = reply.choices[0].message.content
    list(c.chat.completions.create(model="chat", messages=secret, stream=True))
    c.embeddings.create(model="embed", input=SECRET_PROMPT)
    submit_job(gateway, BATCH_KEY, "chat", content=SECRET_PROMPT)
    upstream.default("p-logfb", Behaviour(status=400))
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="logfb", messages=secret)
    r = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "chat", "messages": secret},
                   headers={"Authorization": f"Bearer {SECRET_PROMPT}"})
    assert r.status_code == 401
    lines = access_lines(gateway, expect=10)
    assert len(lines) >= 10
    log = gateway.log()
    for line in log.splitlines():
        assert isinstance(json.loads(line), dict), line  # the whole log is JSON lines, uvicorn's too
    for secret_text in (SECRET_PROMPT, "sk-upstream-primary", "sk-upstream-secondary", CLIENT_KEY, BATCH_KEY,
                        "sk-test-admin"):
        assert secret_text not in log, secret_text
    assert completion and completion not in log


def test_text_format_is_readable_and_keeps_the_fields(make_gateway, upstream, redis_server):
    gw = make_gateway(config(upstream, redis_server.url, log_format="text"))
    with sdk(gw, CLIENT_KEY) as c:
        c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}],
                                  extra_headers={"X-Request-Id": "log-text-1"})
    deadline = time.monotonic() + 5
    while "request_id=log-text-1" not in gw.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(line for line in gw.log().splitlines() if "request_id=log-text-1" in line)
    assert not line.startswith("{")
    assert " INFO " in line and "gateway.access: request" in line
    for field in ("client=web", "tier=interactive", "mode=normal", "target=primary/p-chat", "attempts=1",
                  "status=200", "input_tokens=7", "output_tokens=5"):
        assert field in line, (field, line)


def test_warning_level_silences_the_access_log(make_gateway, upstream, redis_server):
    gw = make_gateway(config(upstream, redis_server.url, log_level="warning"))
    with sdk(gw, CLIENT_KEY) as c:
        c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "chat"}, headers={"Authorization": "Bearer x"})
    assert r.status_code == 401
    time.sleep(0.3)
    log = gw.log()
    assert "gateway.access" not in log
    assert all(json.loads(line)["level"] in ("warning", "error", "critical") for line in log.splitlines())


LOG_ONE_LINE = """
import logging
from gateway.observability import logging as gw_logging
gw_logging.configure("info", "auto")
logging.getLogger("gateway.access").info("request", extra={"fields": {"tier": "interactive", "status": 200}})
"""


def test_auto_format_is_text_on_a_terminal_and_json_otherwise():
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-c", LOG_ONE_LINE], stderr=secondary, stdout=subprocess.DEVNULL,
                              timeout=30, check=True)
        assert proc.returncode == 0
        on_tty = os.read(primary, 4096).decode()
    finally:
        os.close(primary)
        os.close(secondary)
    assert "INFO" in on_tty and "gateway.access: request tier=interactive status=200" in on_tty
    assert not on_tty.lstrip().startswith("{")
    piped = subprocess.run([sys.executable, "-c", LOG_ONE_LINE], capture_output=True, text=True, timeout=30,
                           check=True).stderr
    line = json.loads(piped)
    assert (line["logger"], line["tier"], line["status"]) == ("gateway.access", "interactive", 200)
