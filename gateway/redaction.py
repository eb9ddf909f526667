"""Redaction: secrets never leave the gateway in logs, errors or status.

Two nets: the exact values the configuration holds (provider keys, client and
admin keys, webhook secrets), and the shapes keys usually have (``sk-…``,
``Bearer …``, ``x-api-key: …``, passwords in URLs), which also catch a key an
upstream echoes back in an error body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
_SHAPES = re.compile(
    r"(?i)(sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{8,})"  # OpenAI / Anthropic style keys
    r"|(?<=bearer )[A-Za-z0-9._~+/=\-]{8,}"  # bearer tokens
    r"|(?<=x-api-key: )\S{8,}"
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"  # user:password@ in URLs
)


class Redactor:
    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        # Longest first, so a key that contains another is masked whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return _SHAPES.sub(MASK, value)

    def bytes(self, value: bytes) -> bytes:
        try:
            return self.text(value.decode()).encode()
        except UnicodeDecodeError:
            return value


def from_config(config: object) -> Redactor:
    """Every secret value a configuration holds."""
    found: list[str | None] = []
    auth = getattr(config, "auth", None)
    if auth is not None:
        found += [k.key for k in auth.admin_keys] + [c.key for c in auth.clients]
        found += [c.webhook_secret for c in auth.clients]
    for p in getattr(config, "providers", {}).values():
        found.append(p.api_key)
        found += [v for k, v in p.headers.items() if k.lower() in ("authorization", "api-key", "x-api-key")]
    return Redactor(found)
