"""Authentication: bearer keys to clients, digests, open loopback access, admin keys."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from gateway.auth import Authenticator, Client, bearer, is_loopback
from gateway.config import parse
from gateway.errors import AuthenticationFailed

WEB_KEY = "sk-web-123"
BATCH_KEY = "sk-batch-456"
ADMIN_KEY = "sk-admin-789"


def config(auth: dict[str, Any] | None = None, tiers: dict[str, Any] | None = None) -> Any:
    return parse({
        "auth": auth or {},
        "providers": {"sim": {"kind": "simulator"}},
        "models": {"m": {"targets": [{"provider": "sim", "model": "m"}]}},
        "tiers": tiers or {
            "interactive": {"priority": 0},
            "standard": {"priority": 1},
            "background": {"priority": 2, "async": True},
        },
    }, env={})


KEYED = config({
    "admin_keys": [{"name": "oncall", "key": ADMIN_KEY},
                   {"name": "backup", "key_sha256": hashlib.sha256(b"sk-admin-2").hexdigest()}],
    "clients": [
        {"name": "web", "key": WEB_KEY, "tiers": ["interactive", "standard"], "default_tier": "interactive"},
        {"name": "batch", "key_sha256": hashlib.sha256(BATCH_KEY.encode()).hexdigest(),
         "tiers": ["background"], "default_tier": "background"},
    ],
})


@pytest.mark.parametrize(
    "header,expected",
    [
        (None, None),
        ("", None),
        ("Bearer sk-1", "sk-1"),
        ("bearer sk-1", "sk-1"),
        ("BEARER   sk-1  ", "sk-1"),
        ("Bearer ", None),
        ("Bearer", None),
        ("Basic dXNlcjpwYXNz", None),
        ("sk-1", None),
        ("Token sk-1", None),
    ],
)
def test_bearer(header, expected):
    assert bearer(header) == expected


@pytest.mark.parametrize(
    "host,expected",
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True), ("10.0.0.1", False),
     ("192.168.1.5", False), ("::ffff:10.0.0.1", False), ("example.com", False), ("", False), (None, False)],
)
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


@pytest.mark.parametrize(
    "authorization,expected",
    [
        (f"Bearer {WEB_KEY}", Client("web", frozenset({"interactive", "standard"}), "interactive")),
        (f"bearer {WEB_KEY}", Client("web", frozenset({"interactive", "standard"}), "interactive")),
        (f"Bearer {BATCH_KEY}", Client("batch", frozenset({"background"}), "background")),  # configured as a digest
    ],
)
def test_a_known_key_resolves_to_its_client(authorization, expected):
    assert KEYED.auth.clients  # keys configured: access is not open
    assert Authenticator(KEYED).client(authorization, "10.1.2.3") == expected


@pytest.mark.parametrize(
    "authorization,code",
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        ("Basic abc", "missing_api_key"),
        ("Bearer sk-unknown", "invalid_api_key"),
        (f"Bearer {WEB_KEY}x", "invalid_api_key"),
        (f"Bearer {ADMIN_KEY}", "invalid_api_key"),  # an admin key is not a client key
        (f"Bearer {hashlib.sha256(BATCH_KEY.encode()).hexdigest()}", "invalid_api_key"),  # the digest is not the key
    ],
)
def test_a_missing_or_unknown_key_is_refused(authorization, code):
    with pytest.raises(AuthenticationFailed) as err:
        Authenticator(KEYED).client(authorization, "127.0.0.1")
    assert err.value.status == 401
    assert err.value.code == code
    assert WEB_KEY not in err.value.message and "sk-unknown" not in err.value.message


@pytest.mark.parametrize("peer,allowed", [("127.0.0.1", True), ("::1", True), ("10.0.0.7", False), (None, False)])
def test_without_client_keys_access_is_open_on_loopback_only(peer, allowed):
    auth = Authenticator(config())
    assert auth.open
    if allowed:
        client = auth.client(None, peer)
        assert client.tiers == frozenset({"interactive", "standard", "background"})
        assert client.default_tier == "interactive"
        assert auth.client("Bearer anything", peer) == client
    else:
        with pytest.raises(AuthenticationFailed):
            auth.client(None, peer)


def test_open_access_defaults_to_the_most_urgent_sync_tier():
    auth = Authenticator(config(tiers={"now": {"priority": 1}, "later": {"priority": 0, "async": True}}))
    assert auth.client(None, "127.0.0.1").default_tier == "now"


@pytest.mark.parametrize(
    "authorization,peer,expected",
    [
        (f"Bearer {ADMIN_KEY}", "10.0.0.1", "oncall"),
        ("Bearer sk-admin-2", "10.0.0.1", "backup"),
        (None, "127.0.0.1", None),
        (f"Bearer {WEB_KEY}", "127.0.0.1", None),
        ("Bearer nope", "10.0.0.1", None),
    ],
)
def test_admin_keys(authorization, peer, expected):
    auth = Authenticator(KEYED)
    assert not auth.admin_open
    if expected is None:
        with pytest.raises(AuthenticationFailed):
            auth.admin(authorization, peer)
    else:
        assert auth.admin(authorization, peer).name == expected


@pytest.mark.parametrize("peer,allowed", [("127.0.0.1", True), ("10.0.0.1", False)])
def test_without_admin_keys_the_admin_api_is_loopback_only(peer, allowed):
    auth = Authenticator(config({"clients": [{"name": "w", "key": WEB_KEY, "tiers": ["interactive"],
                                              "default_tier": "interactive"}]}))
    assert auth.admin_open and not auth.open
    if allowed:
        assert auth.admin(None, peer).name == "loopback"
    else:
        with pytest.raises(AuthenticationFailed):
            auth.admin(None, peer)
