"""Nothing accepted is lost: a worker killed mid-drain, and Redis restarted from its append-only file.

Jobs are enqueued by an API-only gateway (``--no-worker``) and drained by
separate ``gateway worker`` processes, as in a deployment.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import redis

from gateway.queue.keys import Keys
from tests.conftest import BATCH_KEY, base_config
from tests.support.jobs import get_job, namespace, stream_length, submit_job, wait_until
from tests.support.redis import RedisServer
from tests.support.upstream import Behaviour, FakeUpstream


def durable_config(upstream: FakeUpstream, redis_url: str, ns: str) -> dict[str, Any]:
    config = base_config(upstream, redis_url)
    config["providers"]["durable"] = {"kind": "openai", "base_url": upstream.base_url, "max_concurrency": 16,
                                      "circuit": {"failure_threshold": 1000, "cooldown_s": 1.0}}
    config["models"]["durable"] = {"targets": [{"provider": "durable", "model": "u-durable"}]}
    config["queue"] = {"namespace": ns, "mini_batch_size": 8, "mini_batch_wait_s": 0.05, "visibility_timeout_s": 2}
    return config


class DoneNotices:
    """Listens on the gateway's completion channel: one notice is published per job, when it first ends."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client  # keep it: a collected client closes its pool, the subscription's connection too
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(keys.done_channel)
        self.seen: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.1)
            if message and message["type"] == "message":
                self.seen[message["data"].decode()] += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()
        self.client.close()


def submit_all(gw: Any, n: int) -> list[str]:
    with httpx.Client() as http:
        return [submit_job(gw, BATCH_KEY, "durable", content=f"job {i}", http=http) for i in range(n)]


def final_states(gw: Any, job_ids: list[str]) -> list[dict[str, Any]]:
    with httpx.Client() as http:
        return [get_job(gw, BATCH_KEY, job_id, wait=30, http=http).json() for job_id in job_ids]


def test_worker_killed_mid_drain_loses_nothing_and_completes_each_job_once(make_gateway, upstream, redis_server):
    ns = namespace("crash")
    config = durable_config(upstream, redis_server.url, ns)
    api = make_gateway(config, args=("--no-worker",))
    upstream.default("u-durable", Behaviour(delay_s=0.4))
    job_ids = submit_all(api, 40)
    notices = DoneNotices(redis_server.client(), Keys(ns))
    try:
        first = make_gateway(config, command="worker")
        wait_until(lambda: len(upstream.calls("u-durable")) >= 8, timeout=20, what="the first worker to start draining")
        first.kill()  # SIGKILL: its eight jobs in flight are left pending in the stream
        make_gateway(config, command="worker")

        jobs = final_states(api, job_ids)
        assert [j["status"] for j in jobs] == ["succeeded"] * len(job_ids), [j for j in jobs if j["status"] != "succeeded"]
        assert all(j["response"]["body"]["object"] == "chat.completion" for j in jobs)
        wait_until(lambda: sum(notices.seen.values()) >= len(job_ids), what="every completion notice")
    finally:
        notices.close()
    # Each job ended exactly once: one completion notice per job, none for anything else.
    assert notices.seen == Counter({job_id: 1 for job_id in job_ids})
    reclaimed = [j for j in jobs if j["attempts"] > 1]
    assert 1 <= len(reclaimed) <= 8  # the killed worker's jobs ran again, and only those
    # At least once: every job reached the upstream, the reclaimed ones possibly twice.
    prompts = Counter(c.body["messages"][0]["content"] for c in upstream.calls("u-durable"))
    assert set(prompts) == {f"job {i}" for i in range(40)}
    keys = Keys(ns)
    with redis_server.client() as r:
        assert r.xlen(keys.dead) == 0
        assert r.xlen(keys.stream("background")) == 0  # every entry acked and deleted
        assert r.xpending(keys.stream("background"), keys.group)["pending"] == 0


def test_queued_jobs_survive_a_redis_restart_with_aof(make_gateway, upstream, tmp_path: Path):
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        ns = namespace("aof")
        config = durable_config(upstream, server.url, ns)
        api = make_gateway(config, args=("--no-worker",))
        job_ids = submit_all(api, 20)

        server.restart(kill=True)  # SIGKILL: only what reached the append-only file comes back
        assert stream_length(server, ns, "background") == 20
        # The API gateway carries on with the restarted Redis: the jobs are there, still queued.
        assert [get_job(api, BATCH_KEY, job_id).json()["status"] for job_id in job_ids] == ["queued"] * 20

        make_gateway(config, command="worker")
        jobs = final_states(api, job_ids)
        assert [j["status"] for j in jobs] == ["succeeded"] * 20, jobs
        assert sorted(c.body["messages"][0]["content"] for c in upstream.calls("u-durable")) == sorted(
            f"job {i}" for i in range(20)
        )
    finally:
        server.stop()
