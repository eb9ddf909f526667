"""Webhooks: the allowlist at submission, the address check at delivery, the signature, and live delivery."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import httpx
import pytest

from gateway.errors import InvalidRequest
from gateway.queue.webhook import address_allowed, check_callback, signature
from tests.conftest import BATCH_KEY, CLIENT_KEY, base_config
from tests.support.jobs import (
    get_job,
    namespace,
    stream_length,
    submit,
    submit_job,
    wait_for,
    wait_until,
)
from tests.support.net import free_port
from tests.support.sdk import assert_openai_error

SECRET = "whsec-test"

# -- submission: check_callback


ALLOW = ["hooks.example.com", "127.0.0.1", "10.1.0.0/16", "::1", "not-a-cidr/99"]


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/done",
        "https://HOOKS.Example.COM:8443/done?x=1",
        "http://127.0.0.1:9000/hook",
        "http://10.1.200.3/hook",  # inside an allowlisted CIDR
        "http://[::1]:8000/hook",
    ],
)
def test_check_callback_allows(url):
    assert check_callback(url, ALLOW) == url


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://evil.example.com/x", "callback_host_not_allowed"),
        ("https://hooks.example.com.evil.net/x", "callback_host_not_allowed"),
        ("https://sub.hooks.example.com/x", "callback_host_not_allowed"),
        ("http://10.2.0.1/x", "callback_host_not_allowed"),  # outside the CIDR
        ("http://127.0.0.2/x", "callback_host_not_allowed"),
        ("http://169.254.169.254/latest/meta-data", "callback_host_not_allowed"),
        ("http://[::2]/x", "callback_host_not_allowed"),
        ("ftp://hooks.example.com/x", "invalid_callback_url"),
        ("hooks.example.com/x", "invalid_callback_url"),
        ("https:///x", "invalid_callback_url"),
        ("https://user:pw@hooks.example.com/x", "invalid_callback_url"),
    ],
)
def test_check_callback_refuses(url, code):
    with pytest.raises(InvalidRequest) as caught:
        check_callback(url, ALLOW)
    assert caught.value.status == 400
    assert caught.value.code == code
    assert caught.value.param == "X-Gateway-Callback-Url"


def test_check_callback_with_an_empty_allowlist_refuses_everything():
    with pytest.raises(InvalidRequest):
        check_callback("https://hooks.example.com/x", [])


# -- delivery: address_allowed


@pytest.mark.parametrize(
    ("addr", "allowlist", "allowed"),
    [
        ("93.184.216.34", [], True),  # public
        ("2606:2800:220:1:248:1893:25c8:1946", [], True),
        ("127.0.0.1", [], False),
        ("127.0.0.1", ["localhost"], False),  # a name entry does not open loopback
        ("127.0.0.1", ["127.0.0.1"], True),
        ("10.0.0.7", [], False),
        ("10.0.0.7", ["10.0.0.0/8"], True),
        ("172.16.5.4", [], False),
        ("192.168.1.1", [], False),
        ("169.254.169.254", [], False),  # link-local: cloud metadata
        ("0.0.0.0", [], False),
        ("224.0.0.1", [], False),
        ("::1", [], False),
        ("::1", ["::1/128"], True),
        ("fe80::1", [], False),
        ("fd00::1", [], False),
        ("::ffff:127.0.0.1", [], False),  # IPv4-mapped loopback
        ("::ffff:10.0.0.1", [], False),
    ],
)
def test_address_allowed(addr, allowlist, allowed):
    assert address_allowed(addr, allowlist) is allowed


# -- signature


@pytest.mark.parametrize(
    ("secret", "ts", "body", "expected"),
    [
        # printf '%s' '1700000000.{"id":"job_1","status":"succeeded"}' | openssl dgst -sha256 -hmac whsec-test
        (SECRET, 1700000000, b'{"id":"job_1","status":"succeeded"}',
         "t=1700000000,v1=3ff7e51aba70ecb69192274fcf595ad1cf03027678880a6dc40766597f2cbd47"),
        # printf '%s' '0.' | openssl dgst -sha256 -hmac k
        ("k", 0, b"", "t=0,v1=6b4a4b8b3c40f1e8f53a3d36682e5f99f7ad2ac1df1c93dfe336f329167641e7"),
    ],
)
def test_signature_known_vectors(secret, ts, body, expected):
    assert signature(secret, ts, body) == expected


def test_signature_depends_on_secret_time_and_body():
    base = signature(SECRET, 1700000000, b"{}")
    assert signature("other", 1700000000, b"{}") != base
    assert signature(SECRET, 1700000001, b"{}") != base
    assert signature(SECRET, 1700000000, b"{ }") != base


# -- live delivery


class Receiver:
    """A webhook endpoint on a free port; answers with scripted statuses, then 204."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[tuple[dict[str, str], bytes, float]] = []
        self.port = free_port()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body, time.time()))
                status = receiver.statuses.pop(0) if receiver.statuses else 204
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify(header: str, body: bytes, secret: str) -> int:
    """Check ``t=UNIX,v1=HEX`` as a receiver would; return the timestamp."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected), "signature does not verify"
    return int(parts["t"])


@pytest.fixture(scope="module")
def ns() -> str:
    return namespace("hooks")


@pytest.fixture(scope="module")
def gateway(make_module_gateway, upstream_server, redis_server, ns):
    config = base_config(upstream_server, redis_server.url)
    config["queue"] = {"namespace": ns, "mini_batch_wait_s": 0.05, "webhook_attempts": 3}
    web, batch = config["auth"]["clients"]
    web.update(callback_hosts=["127.0.0.1", "10.9.0.0/16"], webhook_secret=SECRET)
    # This client names ``localhost``: allowed at submission, but it resolves to loopback, which no IP entry opens.
    batch.update(callback_hosts=["localhost"], webhook_secret="whsec-batch")
    config["models"]["hooked"] = {"targets": [{"provider": "primary", "model": "h-chat"}]}
    return make_module_gateway(config)


def test_webhook_is_signed_and_verifies(gateway, upstream):
    with Receiver(statuses=[500]) as receiver:  # the first delivery fails: the gateway tries again
        job_id = submit_job(gateway, CLIENT_KEY, "hooked", extra_headers={"X-Gateway-Callback-Url": receiver.url()})
        wait_until(lambda: len(receiver.received) >= 2, timeout=15, what="two webhook deliveries")
        for request_headers, body, received_at in receiver.received:
            assert request_headers["content-type"] == "application/json"
            ts = verify(request_headers["x-gateway-signature"], body, SECRET)
            assert abs(ts - received_at) < 60
            obj = json.loads(body)
            assert obj["id"] == job_id
            assert obj["object"] == "gateway.job"
            assert obj["status"] == "succeeded"
            assert obj["response"]["body"]["object"] == "chat.completion"
        # A receiver with the wrong secret, or a tampered body, would reject it.
        request_headers, body, _ = receiver.received[0]
        with pytest.raises(AssertionError):
            verify(request_headers["x-gateway-signature"], body, "whsec-wrong")
        with pytest.raises(AssertionError):
            verify(request_headers["x-gateway-signature"], body.replace(b"succeeded", b"failed"), SECRET)

    def delivered() -> bool:
        return "webhook" in get_job(gateway, CLIENT_KEY, job_id).json()

    wait_until(delivered, what="the delivery outcome on the job")
    record = get_job(gateway, CLIENT_KEY, job_id).json()["webhook"]
    assert record == {"status": "delivered", "attempts": 2, "http_status": 204}


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://hooks.example.com/x", "callback_host_not_allowed"),
        ("http://10.8.0.1/x", "callback_host_not_allowed"),
        ("http://169.254.169.254/x", "callback_host_not_allowed"),
        ("file:///etc/passwd", "invalid_callback_url"),
    ],
)
def test_callback_host_not_on_allowlist_is_refused_at_submission(gateway, upstream, redis_server, ns, url, code):
    before = stream_length(redis_server, ns, "interactive")
    response = submit(gateway, CLIENT_KEY, "hooked", extra_headers={"X-Gateway-Callback-Url": url})
    error = assert_openai_error(response, 400, type_="invalid_request_error", code=code)
    assert error["param"] == "X-Gateway-Callback-Url"
    assert response.headers["x-should-retry"] == "false"
    # Refused before anything was queued or sent.
    assert stream_length(redis_server, ns, "interactive") == before
    assert upstream.calls("h-chat") == []


def test_allowlisted_name_that_resolves_to_loopback_is_not_called(gateway, upstream):
    with Receiver() as receiver:
        job_id = submit_job(gateway, BATCH_KEY, "hooked",
                            extra_headers={"X-Gateway-Callback-Url": receiver.url(host="localhost")})
        assert wait_for(gateway, BATCH_KEY, job_id)["status"] == "succeeded"

        def recorded() -> bool:
            return "webhook" in get_job(gateway, BATCH_KEY, job_id).json()

        wait_until(recorded, what="the delivery outcome on the job")
        record = get_job(gateway, BATCH_KEY, job_id).json()["webhook"]
        assert record["status"] == "refused", record
        assert receiver.received == []


def test_allowlists_are_per_client(gateway, upstream):
    # 127.0.0.1 is on the web client's allowlist, not on the batch client's (which names only localhost).
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "hooked", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {BATCH_KEY}", "X-Gateway-Callback-Url": "http://127.0.0.1:1/x"},
        timeout=10,
    )
    assert_openai_error(response, 400, code="callback_host_not_allowed")
