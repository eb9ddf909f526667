"""``gateway worker --port``: a separate worker drains the queue and can be probed and scraped."""

from __future__ import annotations

import httpx

from tests.conftest import CLIENT_KEY, base_config
from tests.support.net import free_port, wait_http


def test_a_separate_worker_drains_and_exports_its_metrics(make_gateway, upstream, redis_server):
    cfg = base_config(upstream, redis_server.url)
    cfg["queue"] = {"namespace": "worker-port", "mini_batch_wait_s": 0.05}
    api = make_gateway(cfg, args=("--no-worker",))
    port = free_port()
    worker = make_gateway(cfg, command="worker", args=("--port", str(port)))
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", proc=worker.proc)
    assert httpx.get(url + "/readyz").status_code == 200
    r = httpx.post(api.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}",
                                                             "Prefer": "respond-async"},
                   json={"model": "chat", "messages": [{"role": "user", "content": "later"}]})
    assert r.status_code == 202
    job = httpx.get(api.url + r.headers["location"], params={"wait": 10},
                    headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=15).json()
    assert job["status"] == "succeeded"
    metrics = httpx.get(url + "/metrics").text
    assert 'gateway_jobs_total{status="succeeded",tier="interactive",via="minibatch"} 1.0' in metrics
    api_jobs = [line for line in httpx.get(api.url + "/metrics").text.splitlines()
                if line.startswith("gateway_jobs_total{") and not line.endswith(" 0.0")]
    assert api_jobs == []  # the API replica served nothing from the queue
