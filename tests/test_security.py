"""Security against live gateways: hashed keys, the admin listener, tenant isolation, CORS.

Webhook SSRF (a name allowlisted that resolves to loopback is refused at
delivery, an IP allowlist entry allows it) is in tests/queue/test_webhook.py;
redaction in tests/test_redaction.py; per-client limits in tests/test_quota.py.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ADMIN_KEY, BATCH_KEY, CLIENT_KEY, base_config
from tests.support.jobs import namespace, submit_job, wait_for
from tests.support.net import free_port
from tests.support.sdk import assert_openai_error

HASHED_CLIENT_KEY = "sk-hashed-client-7f3a9c"
HASHED_ADMIN_KEY = "sk-hashed-admin-51be20"


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def hashed_config(upstream: Any, redis_url: str) -> dict[str, Any]:
    config = base_config(upstream, redis_url)
    config["queue"] = {"namespace": namespace("sec"), "mini_batch_wait_s": 0.05}
    config["auth"]["clients"].append({"name": "hashed", "key_sha256": sha256(HASHED_CLIENT_KEY),
                                      "tiers": ["interactive", "standard"], "default_tier": "interactive"})
    config["auth"]["admin_keys"].append({"name": "hashed-admin", "key_sha256": sha256(HASHED_ADMIN_KEY).upper()})
    return config


@pytest.fixture(scope="module")
def gateway(make_module_gateway, upstream_server, redis_server):
    return make_module_gateway(hashed_config(upstream_server, redis_server.url))


def chat(gw: Any, key: str | None, **extra: str) -> httpx.Response:
    headers = {**extra}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(gw.url + "/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
                      headers=headers, timeout=20)


def admin_status(gw: Any, key: str | None, url: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.get((url or gw.url) + "/admin/status", headers=headers, timeout=10)


# -- keys


def test_a_client_configured_by_key_sha256_gets_in(gateway):
    response = chat(gateway, HASHED_CLIENT_KEY)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "key",
    [HASHED_CLIENT_KEY[:-1], HASHED_CLIENT_KEY + "x", HASHED_CLIENT_KEY.upper(), sha256(HASHED_CLIENT_KEY),
     CLIENT_KEY[:-1], CLIENT_KEY[:4], " " + CLIENT_KEY + "0", "Bearer"],
    ids=["hashed-prefix", "hashed-longer", "hashed-case", "the-digest-itself", "plain-prefix", "plain-short",
         "plain-longer", "word-bearer"],
)
def test_near_miss_keys_are_refused(gateway, key):
    assert_openai_error(chat(gateway, key), 401)


def test_an_admin_configured_by_key_sha256_gets_in_and_a_client_key_does_not(gateway):
    assert admin_status(gateway, HASHED_ADMIN_KEY).status_code == 200
    assert admin_status(gateway, ADMIN_KEY).status_code == 200
    for wrong in (HASHED_ADMIN_KEY[:-1], ADMIN_KEY[:-1], ADMIN_KEY + "x", CLIENT_KEY, HASHED_CLIENT_KEY,
                  sha256(HASHED_ADMIN_KEY)):
        assert_openai_error(admin_status(gateway, wrong), 401)
    assert_openai_error(admin_status(gateway, None), 401)


def test_a_key_never_shows_in_admin_status(gateway):
    text = admin_status(gateway, ADMIN_KEY).text
    for secret in (CLIENT_KEY, BATCH_KEY, ADMIN_KEY, HASHED_ADMIN_KEY, HASHED_CLIENT_KEY, "sk-upstream-primary"):
        assert secret not in text


# -- the admin listener


def test_with_admin_port_admin_routes_are_not_on_the_api_port(make_gateway, upstream, redis_server):
    config = hashed_config(upstream, redis_server.url)
    admin_port = free_port()
    config["server"]["admin_port"] = admin_port
    gw = make_gateway(config)
    admin_url = f"http://127.0.0.1:{admin_port}"
    for path in ("/admin/status", "/admin/mode", "/admin/audit"):
        response = httpx.get(gw.url + path, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
        assert response.status_code == 404, (path, response.status_code)
    assert admin_status(gw, ADMIN_KEY, admin_url).status_code == 200
    assert admin_status(gw, HASHED_ADMIN_KEY, admin_url).status_code == 200
    assert_openai_error(admin_status(gw, CLIENT_KEY, admin_url), 401)
    # The API stays on the API port.
    assert chat(gw, CLIENT_KEY).status_code == 200
    assert httpx.get(admin_url + "/v1/models", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                     timeout=10).status_code == 404


# -- tenant isolation


def entropy_bits(ids: list[str], strip: int) -> float:
    """Shannon entropy per character of the random part, times its length: a rough bound on guessability."""
    tails = [i[strip:] for i in ids]
    counts = Counter("".join(tails))
    total = sum(counts.values())
    per_char = -sum(c / total * math.log2(c / total) for c in counts.values())
    return per_char * min(len(t) for t in tails)


def test_job_ids_are_unguessable_and_other_clients_get_404(gateway, upstream):
    ids = [submit_job(gateway, CLIENT_KEY, "chat") for _ in range(8)]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("job_") for i in ids)
    assert entropy_bits(ids, len("job_")) >= 100  # 18 random bytes, base64url: about 144 bits
    job_id = ids[0]
    assert wait_for(gateway, CLIENT_KEY, job_id)["status"] == "succeeded"
    for key in (BATCH_KEY, HASHED_CLIENT_KEY):
        other = httpx.get(f"{gateway.url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert_openai_error(other, 404)
        gone = httpx.delete(f"{gateway.url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert_openai_error(gone, 404)
    assert httpx.get(f"{gateway.url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                     timeout=10).status_code == 200


def upload(gw: Any, key: str) -> str:
    line = orjson.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}})
    r = httpx.post(gw.url + "/v1/files", headers={"Authorization": f"Bearer {key}"}, data={"purpose": "batch"},
                   files={"file": ("in.jsonl", line + b"\n", "application/jsonl")}, timeout=20)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def test_file_and_batch_ids_are_unguessable_and_other_clients_get_404(gateway, upstream):
    files = [upload(gateway, BATCH_KEY) for _ in range(4)]
    assert len(set(files)) == len(files)
    assert entropy_bits(files, len("file-") + 12) >= 100  # after the prefix and the millisecond clock: 128 random bits
    batches = []
    for file_id in files[:3]:
        r = httpx.post(gateway.url + "/v1/batches", headers={"Authorization": f"Bearer {BATCH_KEY}"},
                       json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
                       timeout=20)
        assert r.status_code == 200, r.text
        batches.append(r.json()["id"])
    assert len(set(batches)) == len(batches)
    assert entropy_bits(batches, len("batch_") + 12) >= 100
    other = {"Authorization": f"Bearer {CLIENT_KEY}"}
    for path in (f"/v1/files/{files[0]}", f"/v1/files/{files[0]}/content", f"/v1/batches/{batches[0]}"):
        assert_openai_error(httpx.get(gateway.url + path, headers=other, timeout=10), 404)
    assert_openai_error(httpx.post(f"{gateway.url}/v1/batches/{batches[0]}/cancel", headers=other, timeout=10), 404)
    assert_openai_error(httpx.delete(f"{gateway.url}/v1/files/{files[3]}", headers=other, timeout=10), 404)
    # Another client cannot start a batch on someone else's file either.
    stolen = httpx.post(gateway.url + "/v1/batches", headers=other, timeout=10,
                        json={"input_file_id": files[3], "endpoint": "/v1/chat/completions", "completion_window": "24h"})
    assert stolen.status_code in (400, 404), stolen.text
    listed = httpx.get(gateway.url + "/v1/files", headers=other, timeout=10).json()["data"]
    assert not {f["id"] for f in listed} & set(files)
    owner = {"Authorization": f"Bearer {BATCH_KEY}"}
    assert httpx.get(f"{gateway.url}/v1/files/{files[0]}", headers=owner, timeout=10).status_code == 200


# -- CORS


def preflight(gw: Any, origin: str) -> httpx.Response:
    return httpx.options(gw.url + "/v1/chat/completions", timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})


def test_cors_is_off_by_default(gateway):
    response = preflight(gateway, "https://evil.example")
    assert "access-control-allow-origin" not in response.headers
    cross = chat(gateway, CLIENT_KEY, Origin="https://evil.example")
    assert cross.status_code == 200
    assert "access-control-allow-origin" not in cross.headers


def test_cors_allows_only_the_listed_origins(make_gateway, upstream, redis_server):
    config = base_config(upstream, redis_server.url)
    config["server"]["cors_origins"] = ["https://app.example"]
    gw = make_gateway(config)
    allowed = preflight(gw, "https://app.example")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    cross = chat(gw, CLIENT_KEY, Origin="https://app.example")
    assert cross.headers["access-control-allow-origin"] == "https://app.example"
    other = preflight(gw, "https://evil.example")
    assert other.headers.get("access-control-allow-origin") != "https://evil.example"
    assert "access-control-allow-origin" not in chat(gw, CLIENT_KEY, Origin="https://evil.example").headers
