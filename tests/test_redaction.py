"""Secrets are redacted in logs, in errors (upstream bodies included) and in /admin/status."""

from __future__ import annotations

import httpx
import orjson
import pytest

from gateway import config as config_mod
from gateway.redaction import MASK, Redactor, from_config
from tests.conftest import ADMIN_KEY, CLIENT_KEY, base_config
from tests.support.upstream import Behaviour


@pytest.mark.parametrize(
    "text, secrets, expected",
    [
        ("key is hunter2-very-secret", ["hunter2-very-secret"], f"key is {MASK}"),
        ("sk-proj-abcdefghijklmnop leaked", [], f"{MASK} leaked"),
        ("sk-ant-api03-abcdefgh leaked", [], f"{MASK} leaked"),
        ("Authorization: Bearer abcdefghijklmnopq", [], f"Authorization: Bearer {MASK}"),
        ("x-api-key: abcdefghijkl", [], f"x-api-key: {MASK}"),
        ("redis://user:pa55word@redis:6379/0", [], f"redis://{MASK}@redis:6379/0"),
        ("nothing to see", ["short"], "nothing to see"),  # values under 6 characters are not treated as secrets
        ("a sk-short b", [], "a sk-short b"),
        ("abcdefghij and abcdefghijXYZ", ["abcdefghij", "abcdefghijXYZ"], f"{MASK} and {MASK}"),  # longest first
    ],
)
def test_redactor(text, secrets, expected):
    assert Redactor(secrets).text(text) == expected


def test_from_config_collects_every_secret(upstream, redis_server):
    cfg = base_config(upstream, redis_server.url)
    cfg["providers"]["primary"]["headers"] = {"api-key": "azure-key-123456"}
    r = from_config(config_mod.parse(cfg, {}))
    for secret in ("sk-upstream-primary", "sk-upstream-secondary", CLIENT_KEY, ADMIN_KEY, "azure-key-123456"):
        assert secret in r.secrets


def test_no_secret_reaches_the_client_the_log_or_the_status(make_gateway, upstream, redis_server):
    cfg = base_config(upstream, redis_server.url)
    cfg["queue"] = {"namespace": "redaction"}
    gw = make_gateway(cfg)
    # The upstream rejects the gateway's key and echoes it back, as some providers do.
    echo = orjson.dumps({"error": {"message": "Incorrect API key provided: sk-upstream-primary", "type": "invalid_request_error",
                                   "param": None, "code": "invalid_api_key"}})
    upstream.script("p-chat", Behaviour(status=401, body=echo))
    r = httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                   json={"model": "chat", "messages": [{"role": "user", "content": "my prompt is private"}]})
    assert r.status_code == 401
    assert "sk-upstream-primary" not in r.text and MASK in r.text
    status = httpx.get(gw.url + "/admin/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).text
    log = gw.log()
    for secret in ("sk-upstream-primary", "sk-upstream-secondary", CLIENT_KEY, ADMIN_KEY):
        assert secret not in status
        assert secret not in log
    assert "my prompt is private" not in log
