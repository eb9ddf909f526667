"""Webhooks: which callback URLs a client may name, how they are signed, and delivery.

The allowlist check is pure and runs at submission (a refused host is a 400).
Delivery resolves the host again and refuses private, loopback and link-local
addresses unless an IP or CIDR entry of the allowlist names them, so a DNS
answer cannot turn an allowed name into a path to the gateway's own network.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from gateway.errors import InvalidRequest

log = logging.getLogger("gateway.webhook")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(allowlist: Sequence[str]) -> list[Network]:
    nets = []
    for entry in allowlist:
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue
    return nets


def check_callback(url: str, allowlist: Sequence[str]) -> str:
    """Return the URL if the client may use it; raise ``InvalidRequest`` otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("X-Gateway-Callback-Url must be an absolute http(s) URL.", param="X-Gateway-Callback-Url",
                             code="invalid_callback_url")
    if parts.username or parts.password:
        raise InvalidRequest("X-Gateway-Callback-Url must not carry credentials.", param="X-Gateway-Callback-Url",
                             code="invalid_callback_url")
    host = parts.hostname.lower()
    names = {e.lower() for e in allowlist}
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    allowed = host in names or (addr is not None and any(addr in n for n in _networks(allowlist)))
    if not allowed:
        raise InvalidRequest(f"Callback host {host!r} is not on this client's allowlist.",
                             param="X-Gateway-Callback-Url", code="callback_host_not_allowed")
    return url


def address_allowed(addr: str, allowlist: Sequence[str]) -> bool:
    """Whether a resolved address may be called: public, or named by an IP/CIDR allowlist entry."""
    ip = ipaddress.ip_address(addr)
    if any(ip in n for n in _networks(allowlist)):
        return True
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip.is_unspecified)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``t=UNIX,v1=HEX(HMAC-SHA256(secret, "t.body"))``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


async def deliver(
    session: aiohttp.ClientSession,
    url: str,
    job_object: dict[str, Any],
    secret: str,
    allowlist: Sequence[str],
    attempts: int,
    base_delay_s: float = 1.0,
) -> dict[str, Any]:
    """POST the job object until a 2xx answer or ``attempts`` run out; return the delivery record."""
    body = orjson.dumps(job_object)
    host = urlsplit(url).hostname or ""
    last_error = ""
    status: int | None = None
    for attempt in range(1, attempts + 1):
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
            if not infos or not all(address_allowed(str(i[4][0]), allowlist) for i in infos):
                return {"status": "refused", "attempts": attempt, "error": "callback host resolves to a private address"}
            ts = int(time.time())
            headers = {"Content-Type": "application/json", "X-Gateway-Signature": signature(secret, ts, body)}
            async with session.post(url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10),
                                    allow_redirects=False) as resp:
                status = resp.status
                if 200 <= resp.status < 300:
                    return {"status": "delivered", "attempts": attempt, "http_status": resp.status}
                last_error = f"HTTP {resp.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            last_error = type(exc).__name__
        if attempt < attempts:
            await asyncio.sleep(base_delay_s * 2 ** (attempt - 1))
    log.warning("webhook delivery failed after %d attempts: %s", attempts, last_error)
    return {"status": "failed", "attempts": attempts, "http_status": status, "error": last_error}
