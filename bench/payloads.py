"""What the load generators send: the request bodies, the key and the headers.

Every target (upstream, forwarder, gateway) gets byte-identical requests, so the
only difference between rows is the hop in between.
"""

from __future__ import annotations

import orjson

CLIENT_KEY = "sk-bench-client"
ADMIN_KEY = "sk-bench-admin"
UPSTREAM_KEY = "sk-bench-upstream"
MODEL = "bench"
CHAT_PATH = "/v1/chat/completions"

_MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Say hello in five words."},
]

CHAT_BODY = orjson.dumps({"model": MODEL, "messages": _MESSAGES, "max_tokens": 16})
STREAM_BODY = orjson.dumps({"model": MODEL, "messages": _MESSAGES, "max_tokens": 16, "stream": True})


def headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The headers of a benchmark request: JSON body, bearer key, and any extras."""
    return {"Content-Type": "application/json", "Authorization": f"Bearer {CLIENT_KEY}", **(extra or {})}
