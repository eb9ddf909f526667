"""Fault injection against live gateways: a broken upstream, Redis going away mid-run, slow clients.

The upstream faults use their own models (``fallback_models``), so each has its
own circuit and script; a primary that breaks must fall back to the secondary
before the first byte, and when every target breaks the client gets a clear 502.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import CLIENT_KEY, base_config, fallback_models
from tests.support.jobs import namespace, submit, submit_job, wait_for, wait_until
from tests.support.net import read_reply
from tests.support.redis import RedisServer
from tests.support.sdk import assert_openai_error, metric
from tests.support.upstream import Behaviour, FakeUpstream

BREAKAGE = {
    "reset": Behaviour(reset=True),
    "badjson": Behaviour(body=b'{"id": "chatcmpl-x", "choices": [{"message": ', content_type="application/json"),
    "html": Behaviour(status=502, body=b"<html><body><h1>502 Bad Gateway</h1>nginx</body></html>",
                      content_type="text/html"),
    "html200": Behaviour(body=b"<!doctype html><html><body>Sign in to continue</body></html>", content_type="text/html"),
    "ctype": Behaviour(body=b"everything is fine", content_type="text/plain"),
}
BODY_TIMEOUT_S = 1.0


def faults_config(upstream: FakeUpstream, redis_url: str) -> dict[str, Any]:
    config = base_config(upstream, redis_url)
    config["server"] = {"log_format": "json", "body_timeout_s": BODY_TIMEOUT_S}
    config["models"].update(fallback_models(*BREAKAGE, *(f"all{n}" for n in BREAKAGE), "sreset", "cut", "slowread"))
    config["tiers"]["snappy"] = {"priority": 0, "timeout_s": 2.0, "first_byte_timeout_s": 1.0, "retries": 1,
                                 "admission_timeout_s": 0.2}
    config["auth"]["clients"][0]["tiers"].append("snappy")
    return config


@pytest.fixture(scope="module")
def gateway(make_module_gateway, upstream_server, redis_server):
    return make_module_gateway(faults_config(upstream_server, redis_server.url))


def chat(gw: Any, model: str, *, stream: bool = False, tier: str | None = None, timeout: float = 20.0) -> httpx.Response:
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    if tier:
        headers["X-Gateway-Tier"] = tier
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=timeout)


def assert_healthy(gw: Any) -> None:
    assert httpx.get(gw.url + "/healthz", timeout=5).status_code == 200
    reply = chat(gw, "chat")
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"]


# -- upstream breakage


@pytest.mark.parametrize("kind", list(BREAKAGE))
def test_a_broken_primary_falls_back_before_the_first_byte(gateway, upstream, kind):
    upstream.default(f"p-{kind}", BREAKAGE[kind])
    response = chat(gateway, kind)
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-target"] == f"secondary/s-{kind}"
    assert response.json()["choices"][0]["message"]["content"]
    assert len(upstream.calls(f"p-{kind}")) >= 1


@pytest.mark.parametrize("kind", list(BREAKAGE))
def test_every_target_broken_is_a_clear_502(gateway, upstream, kind):
    upstream.default(f"p-all{kind}", BREAKAGE[kind])
    upstream.default(f"s-all{kind}", BREAKAGE[kind])
    response = chat(gateway, f"all{kind}")
    error = assert_openai_error(response, 502)
    assert error["message"]
    assert "<html" not in response.text.lower()  # an upstream's page is never relayed as if it were ours
    assert upstream.calls(f"s-all{kind}")  # fallback was tried
    assert_healthy(gateway)


def test_a_stream_whose_primary_resets_falls_back(gateway, upstream):
    upstream.default("p-sreset", Behaviour(reset=True))
    response = chat(gateway, "sreset", stream=True)
    assert response.status_code == 200
    assert response.headers["x-gateway-target"] == "secondary/s-sreset"
    assert response.text.rstrip().endswith("data: [DONE]")


def test_a_stream_cut_mid_way_ends_with_an_error_event_and_is_counted(gateway, upstream):
    labels = {"model": "cut", "route": "chat.completions", "outcome": "error"}
    before = metric(gateway, "gateway_requests_total", **labels)
    upstream.default("p-cut", Behaviour(cut_after_events=3))
    response = chat(gateway, "cut", stream=True)
    assert response.status_code == 200  # the headers were out before the cut
    events = [e for e in response.text.split("\n\n") if e.strip()]
    assert len(events) == 4 and "data: [DONE]" not in response.text
    last = orjson.loads(events[-1].removeprefix("data: "))
    assert last["error"]["type"] == "upstream_error"
    wait_until(lambda: metric(gateway, "gateway_requests_total", **labels) == before + 1,
               what="gateway_requests_total{outcome=error} to count the cut stream")
    assert upstream.calls("s-cut") == []  # bytes had reached the client: no second attempt


# -- slow clients


def raw_request(gw: Any, head: str, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    sock.sendall(head.encode() + b"\r\n" + body)
    return sock


def test_a_slowloris_body_gets_408_and_others_are_served_meanwhile(gateway, upstream):
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n")
    slow = [raw_request(gateway, head, b'{"model": "chat", ') for _ in range(5)]
    try:
        assert_healthy(gateway)  # the stalled bodies hold nothing others need
        started = time.monotonic()
        for sock in slow:
            reply = read_reply(sock)
            assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
            assert b'"code":"request_timeout"' in reply.replace(b" ", b""), reply[:300]
        assert time.monotonic() - started < BODY_TIMEOUT_S + 10  # generous: it is body_timeout_s, not forever
    finally:
        for sock in slow:
            sock.close()
    assert_healthy(gateway)


def test_a_slow_sse_reader_does_not_block_others_and_its_slot_is_released(gateway, upstream):
    # Far more than the socket buffers hold, so the gateway's writes to this reader block.
    upstream.default("p-slowread", Behaviour(output_tokens=60_000))
    body = orjson.dumps({"model": "slowread", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
            f"X-Gateway-Tier: snappy\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gateway.port))
    try:
        sock.sendall(head.encode() + b"\r\n" + body)  # ...and then never read
        wait_until(lambda: upstream.calls("p-slowread"), what="the stream to start upstream")
        assert_healthy(gateway)
        # The tier's timeout (2 s) ends the stream even though the client never drained it.
        wait_until(lambda: metric(gateway, "gateway_inflight", tier="snappy") == 0, timeout=15,
                   what="the slow reader's slot to be released")
        assert_healthy(gateway)
    finally:
        sock.close()


def test_idle_connections_beyond_max_connections_get_503_and_the_gateway_recovers(make_gateway, upstream, redis_server):
    config = faults_config(upstream, redis_server.url)
    config["server"]["max_connections"] = 8
    gw = make_gateway(config)
    idle = [socket.create_connection(("127.0.0.1", gw.port), timeout=10) for _ in range(12)]
    try:
        time.sleep(0.3)  # let the server register them
        refused = httpx.get(gw.url + "/healthz", timeout=10)
        assert refused.status_code == 503
    finally:
        for sock in idle:
            sock.close()
    wait_until(lambda: httpx.get(gw.url + "/healthz", timeout=5).status_code == 200, what="/healthz after the flood")
    assert gw.proc is not None and gw.proc.poll() is None
    assert_healthy(gw)


# -- Redis going away mid-run


def test_redis_down_mid_run_then_back_recovers_by_itself_without_a_crash_loop(make_gateway, upstream, tmp_path):
    redis = RedisServer(tmp_path / "redis").start()
    try:
        config = base_config(upstream, redis.url)
        config["queue"] = {"namespace": namespace("midrun"), "mini_batch_wait_s": 0.05}
        gw = make_gateway(config)
        assert gw.proc is not None
        pid = gw.proc.pid
        assert wait_for(gw, CLIENT_KEY, submit_job(gw, CLIENT_KEY, "chat"))["status"] == "succeeded"

        redis.stop()
        wait_until(lambda: httpx.get(gw.url + "/readyz", timeout=5).status_code == 503, what="/readyz to say 503")
        for _ in range(5):  # interactive, non-deferrable traffic goes on
            assert chat(gw, "chat").status_code == 200
        assert_openai_error(submit(gw, CLIENT_KEY, "chat"), 503, code="queue_unavailable")
        time.sleep(2.0)  # the worker loops keep failing to reach Redis for a while

        redis.start()  # same port and folder
        assert redis.port == int(config["redis"]["url"].rsplit(":", 1)[1].split("/")[0])
        wait_until(lambda: httpx.get(gw.url + "/readyz", timeout=5).status_code == 200, timeout=20,
                   what="/readyz to recover without a restart")
        job_id = submit_job(gw, CLIENT_KEY, "chat")
        assert wait_for(gw, CLIENT_KEY, job_id, timeout=20)["status"] == "succeeded"
        assert chat(gw, "chat").status_code == 200

        assert gw.proc.poll() is None and gw.proc.pid == pid  # the same process all along
        log = gw.log()
        assert log.count("Traceback") <= 3, log[-4000:]  # no traceback storm from retry loops
        errors = [line for line in log.splitlines() if '"level":"error"' in line.replace(" ", "")]
        assert len(errors) < 50, errors[-5:]
    finally:
        redis.stop()
