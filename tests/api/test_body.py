"""Hostile input against a live gateway: bodies, headers and ids no honest client sends.

Every answer must be an OpenAI-shaped JSON error with the right status (or, for
what never reaches the app, a clean 4xx from the HTTP layer), and the process
must keep serving afterwards.
"""

from __future__ import annotations

import socket
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import CLIENT_KEY, base_config
from tests.support.net import read_reply
from tests.support.sdk import assert_openai_error

MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def gateway(make_module_gateway, upstream_server, redis_server):
    config = base_config(upstream_server, redis_server.url)
    config["server"] = {"log_format": "json", "max_body_bytes": MAX_BODY, "body_timeout_s": 5}
    gw = make_module_gateway(config)
    # Files the store must never hand out: one beside the store, one above the gateway's folder.
    (gw.tmp / ".gateway").mkdir(exist_ok=True)
    (gw.tmp / ".gateway" / "secret.txt").write_text("TOP-SECRET-BESIDE-THE-STORE")
    (gw.tmp / "passwd").write_text("root:x:0:0:TOP-SECRET-ABOVE")
    return gw


def auth(**extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENT_KEY}", **extra}


def post_raw(gw: Any, content: bytes, content_type: str = "application/json", path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(gw.url + path, content=content, headers=auth(**{"Content-Type": content_type}), timeout=20)


def assert_healthy(gw: Any) -> None:
    assert httpx.get(gw.url + "/healthz", timeout=5).status_code == 200
    ok = httpx.post(gw.url + "/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
                    headers=auth(), timeout=20)
    assert ok.status_code == 200, ok.text


def exchange(gw: Any, raw: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes on a fresh connection and read until the server answers or closes."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=timeout) as sock:
        sock.sendall(raw)
        return read_reply(sock)


# -- sizes


def test_a_huge_declared_body_gets_413_before_the_body_is_sent(gateway):
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {10**12}\r\n\r\n").encode()
    reply = exchange(gateway, head + b'{"model": ')  # only 10 bytes of a terabyte: the answer must not wait for more
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    body = orjson.loads(reply.partition(b"\r\n\r\n")[2])
    assert body["error"]["type"] == "invalid_request_error"
    assert_healthy(gateway)


def test_a_body_just_over_the_limit_is_413(gateway):
    body = orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "x" * MAX_BODY}]})
    assert_openai_error(post_raw(gateway, body), 413)


# -- shapes


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 30_000 + b"]" * 30_000,
        b'{"model": "chat", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"model": "chat", "x": ' + b'{"a":' * 3000 + b"1" + b"}" * 3000 + b"}",
    ],
    ids=["array-30k", "messages-5k", "object-3k"],
)
def test_deeply_nested_json_is_a_400_not_a_crash(gateway, content):
    assert_openai_error(post_raw(gateway, content), 400)
    assert_healthy(gateway)


@pytest.mark.parametrize(
    "content",
    [
        b'{"model": "chat", "messages": [{"role": "user", "content": "\xff\xfe bad"}]}',
        b'{"model": "chat\xc3\x28", "messages": [{"role": "user", "content": "x"}]}',
        b'{"model": "chat", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',  # a UTF-8 encoded surrogate
        b"\xef\xbb\xbf\x00\x00",
    ],
    ids=["ff-fe", "bad-continuation", "surrogate", "bom-nul"],
)
def test_invalid_utf8_is_a_400(gateway, content):
    error = assert_openai_error(post_raw(gateway, content), 400)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("size", [100 * 1024, 1024 * 1024])
def test_a_huge_header_is_refused_and_the_process_stays_healthy(gateway, size):
    raw = (f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
           f"X-Padding: {'a' * size}\r\n\r\n").encode()
    try:
        reply = exchange(gateway, raw)
    except (BrokenPipeError, ConnectionResetError):
        reply = b""  # the server hung up mid-send: refused as well
    if reply:
        assert reply.startswith(b"HTTP/1.1 431"), reply[:300]
        assert orjson.loads(reply.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_header_fields_too_large"
    assert_healthy(gateway)


def test_many_headers_are_refused_or_served_and_the_process_stays_healthy(gateway):
    raw = (f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
           + "".join(f"X-H{i}: {i}\r\n" for i in range(20_000)) + "\r\n").encode()
    try:
        reply = exchange(gateway, raw)
    except (BrokenPipeError, ConnectionResetError):
        reply = b""
    if reply:
        assert reply.startswith(b"HTTP/1.1 431"), reply[:300]
    assert_healthy(gateway)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml",
     "application/jsonx", "text/json-ish"],
)
def test_a_wrong_content_type_is_415(gateway, content_type):
    body = orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    assert_openai_error(post_raw(gateway, body, content_type), 415)


# -- the fields the gateway relies on


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", -1), ("max_tokens", 0), ("max_tokens", 10**12), ("max_tokens", 2**64), ("max_tokens", "100"),
        ("max_tokens", 1.5), ("max_tokens", True), ("max_completion_tokens", -5),
        ("n", 0), ("n", -3), ("n", 1000), ("n", 10**30), ("n", "2"), ("n", [1]),
    ],
)
def test_negative_or_absurd_max_tokens_and_n_are_400_naming_the_param(gateway, field, value):
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], field: value}
    error = assert_openai_error(post_raw(gateway, _dumps(body)), 400)
    assert error["param"] == field, error
    assert field in error["message"]


def _dumps(body: dict[str, Any]) -> bytes:
    import json  # the stdlib writes integers of any size; orjson stops at 64 bits

    return json.dumps(body).encode()


# -- file ids


TRAVERSALS = [
    "/v1/files/..%2F..%2Fetc%2Fpasswd/content",
    "/v1/files/..%2F..%2Fpasswd/content",
    "/v1/files/..%2Fsecret.txt/content",
    "/v1/files/%2e%2e%2f%2e%2e%2fpasswd/content",
    "/v1/files/..%252F..%252Fpasswd/content",
    "/v1/files/....%2F%2F....%2F%2Fpasswd/content",
    "/v1/files/%2Fetc%2Fpasswd/content",
    "/v1/files/file-0%00/content",
    "/v1/files/..%5C..%5Cpasswd/content",
    "/v1/files/..%2F..%2Fpasswd",
]


@pytest.fixture(scope="module")
def uploaded(gateway) -> str:
    line = orjson.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}})
    r = httpx.post(gateway.url + "/v1/files", headers=auth(), data={"purpose": "batch"},
                   files={"file": ("in.jsonl", line + b"\n", "application/jsonl")}, timeout=20)
    assert r.status_code == 200, r.text
    return r.json()["id"]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_in_file_ids_is_404(gateway, uploaded, path):
    response = httpx.get(gateway.url + path, headers=auth(), timeout=10)
    assert_openai_error(response, 404)
    assert b"TOP-SECRET" not in response.content and b"root:" not in response.content


@pytest.mark.parametrize("suffix", ["/../../passwd", "/..%2F..%2F..%2Fpasswd", "%2F..%2F..%2F..%2Fpasswd"])
def test_a_real_id_with_a_traversal_tail_does_not_escape(gateway, uploaded, suffix):
    # Raw request line, so no client normalises the dots away first.
    raw = (f"GET /v1/files/{uploaded}{suffix}/content HTTP/1.1\r\nHost: x\r\n"
           f"Authorization: Bearer {CLIENT_KEY}\r\nConnection: close\r\n\r\n").encode()
    reply = exchange(gateway, raw)
    status = int(reply.split(b" ", 2)[1])
    assert status in (400, 404), reply[:300]
    assert b"TOP-SECRET" not in reply and b"root:" not in reply


def test_the_real_file_is_still_served(gateway, uploaded):
    response = httpx.get(f"{gateway.url}/v1/files/{uploaded}/content", headers=auth(), timeout=10)
    assert response.status_code == 200
    assert b'"custom_id":"a"' in response.content
