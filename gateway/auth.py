"""Authentication: a bearer key resolves to a client with its allowed tiers.

Keys are held only as SHA-256 digests, so a configured ``key`` and a
``key_sha256`` are the same thing at run time, and a digest comparison does not
leak how much of a key matched.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass

from gateway.config import Config, KeyConfig
from gateway.errors import AuthenticationFailed


SEEN_MAX = 1024


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    tiers: frozenset[str]
    default_tier: str


@dataclass(frozen=True, slots=True)
class Admin:
    name: str


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _key_digest(entry: KeyConfig) -> bytes:
    if entry.key_sha256 is not None:
        return bytes.fromhex(entry.key_sha256)
    assert entry.key is not None
    return digest(entry.key)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Authenticator:
    """Resolves request credentials to a ``Client`` (API) or an ``Admin`` (admin API)."""

    def __init__(self, config: Config) -> None:
        self._clients = {
            _key_digest(c): Client(c.name, frozenset(c.tiers), c.default_tier) for c in config.auth.clients
        }
        self._admins = [(_key_digest(a), Admin(a.name)) for a in config.auth.admin_keys]
        self._seen: dict[str, Client] = {}  # presented key -> client, to skip the digest per request
        self.open = not self._clients
        if self.open:
            # Open access: every tier, defaulting to the most urgent tier that is served synchronously.
            sync_tiers = [(t.priority, n) for n, t in config.tiers.items() if not t.async_]
            default = min(sync_tiers or [(t.priority, n) for n, t in config.tiers.items()])[1]
            self._open_client = Client("anonymous", frozenset(config.tiers), default)

    @property
    def admin_open(self) -> bool:
        return not self._admins

    def client(self, authorization: str | None, peer: str | None) -> Client:
        if self.open:
            if not is_loopback(peer):
                raise AuthenticationFailed("No API keys are configured; the gateway only answers on loopback.")
            return self._open_client
        key = bearer(authorization)
        if key is None:
            raise AuthenticationFailed(
                "Missing API key. Send it as 'Authorization: Bearer KEY'.", code="missing_api_key"
            )
        client = self._seen.get(key)
        if client is not None:
            return client
        client = self._clients.get(digest(key))
        if client is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        if len(self._seen) >= SEEN_MAX:
            self._seen.clear()  # bounded: keys are few, so a clear is rare and cheap
        self._seen[key] = client  # only keys that matched; a wrong key is never remembered
        return client

    def admin(self, authorization: str | None, peer: str | None) -> Admin:
        if not self._admins:
            if not is_loopback(peer):
                raise AuthenticationFailed("No admin keys are configured; the admin API only answers on loopback.")
            return Admin("loopback")
        key = bearer(authorization)
        if key is None:
            raise AuthenticationFailed("Missing admin key.", code="missing_api_key")
        presented = digest(key)
        found: Admin | None = None
        for known, admin in self._admins:  # constant time over all admin keys
            if hmac.compare_digest(known, presented):
                found = admin
        if found is None:
            raise AuthenticationFailed("Incorrect admin key provided.")
        return found
