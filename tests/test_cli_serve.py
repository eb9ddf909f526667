"""``gateway serve``: the quick start on the embedded default, Redis resolution, and graceful shutdown."""

from __future__ import annotations

import shutil
import signal
import threading
import time

import httpx
import openai
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import CLIENT_KEY, base_config
from tests.support.gateway_proc import GatewayProcess
from tests.support.sdk import sdk
from tests.support.upstream import Behaviour


def installed_gateway() -> tuple[str, ...]:
    script = shutil.which("gateway")
    assert script, "the `gateway` console script is not installed (pip install -e '.[test]')"
    return (script,)


def no_retry_redis(**kwargs) -> redis.Redis:
    """A client that reports a dead server at once (redis-py retries with backoff by default)."""
    return redis.Redis(retry=Retry(NoBackoff(), 0), socket_connect_timeout=0.5, socket_timeout=2, **kwargs)


def default_redis_answers() -> bool:
    try:
        return bool(no_retry_redis(port=6379).ping())
    except redis.exceptions.RedisError:
        return False


def use_sim_1(gw: GatewayProcess) -> None:
    # No keys are configured: any key (the SDK insists on one) is accepted on loopback.
    client = sdk(gw, "anything")
    assert [m.id for m in client.models.list()] == ["sim-1"]
    reply = client.chat.completions.create(model="sim-1", messages=[{"role": "user", "content": "Hello!"}])
    assert reply.choices[0].message.content
    assert reply.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(
        model="sim-1", messages=[{"role": "user", "content": "Hello!"}], stream=True,
        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.choices[0].message.content
    assert chunks[-1].usage is not None
    assert client.embeddings.create(model="sim-1", input="hi").data[0].embedding
    assert client.completions.create(model="sim-1", prompt="Once").choices[0].text


def test_quick_start_on_the_embedded_default(tmp_path, redis_server):
    gw = GatewayProcess(tmp_path, None, env={"REDIS_URL": redis_server.url}, launcher=installed_gateway()).start()
    try:
        use_sim_1(gw)
        assert httpx.get(gw.url + "/readyz").status_code == 200
        log = gw.log()
        assert "no client keys are configured" in log
        assert not (tmp_path / ".gateway" / "redis.sock").exists()  # the Redis named by REDIS_URL was used
    finally:
        gw.stop()


@pytest.mark.skipif(default_redis_answers(), reason="a Redis already answers on 127.0.0.1:6379; tests never share one")
def test_quick_start_on_a_fresh_machine_starts_a_private_redis(tmp_path):
    gw = GatewayProcess(tmp_path, None, launcher=installed_gateway())
    gw.env.pop("REDIS_URL", None)
    gw.start(wait="/readyz")
    try:
        use_sim_1(gw)
        assert (tmp_path / ".gateway" / "redis.sock").exists()
    finally:
        gw.stop()
    assert not default_redis_answers()


def test_a_private_redis_is_started_under_private_dir_and_stopped_with_the_gateway(tmp_path, upstream):
    home = tmp_path / "r"
    config = base_config(upstream, "redis://127.0.0.1:1/0", redis={"private": "always", "private_dir": str(home)})
    gw = GatewayProcess(tmp_path, config).start(wait="/readyz")
    try:
        assert httpx.get(gw.url + "/readyz").json()["redis"] == "ok"
        socket = home / "redis.sock"
        assert socket.exists()
        private = no_retry_redis(unix_socket_path=str(socket), decode_responses=True)
        assert private.ping()
        assert private.config_get("appendonly") == {"appendonly": "yes"}
        private.close()
        reply = sdk(gw, CLIENT_KEY).chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content
    finally:
        gw.stop()
    with pytest.raises(redis.exceptions.ConnectionError):
        no_retry_redis(unix_socket_path=str(home / "redis.sock")).ping()


def test_sigterm_lets_an_inflight_stream_finish(tmp_path, upstream, redis_server):
    upstream.default("p-chat", Behaviour(event_delay_s=0.25))  # 8 events: about 2 s
    gw = GatewayProcess(tmp_path, base_config(upstream, redis_server.url)).start()
    try:
        stream = sdk(gw, CLIENT_KEY).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "take your time"}], stream=True)
        chunks = iter(stream)
        first = next(chunks)
        gw.signal(signal.SIGTERM)

        # The gateway stops taking new connections while the stream goes on.
        refused = False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                httpx.get(gw.url + "/healthz", timeout=0.5)
            except httpx.TransportError:
                refused = True
                break
            time.sleep(0.05)
        assert refused, "the gateway still accepted connections after SIGTERM"
        assert upstream.active["p-chat"] == 1, "the stream ended before the gateway stopped listening"

        rest = list(chunks)
        text = "".join(c.choices[0].delta.content or "" for c in [first, *rest])
        assert text == "w0 w1 w2 w3 w4 "
        assert rest[-1].choices[0].finish_reason == "stop"
        assert gw.proc is not None
        gw.proc.wait(10)  # and then it exits on its own
    finally:
        gw.stop()
    assert "Application shutdown complete" in gw.log()


def test_served_from_gateway_config_at_debug_level_logs_hold_no_keys_and_no_prompts(tmp_path, upstream, redis_server):
    config = base_config(upstream, redis_server.url)
    config["server"] = {"log_format": "text", "log_level": "debug"}
    config["models"]["from-env"] = {"targets": [{"provider": "primary", "model": "p-env"}]}
    gw = GatewayProcess(tmp_path, config)
    path, gw.config_path = gw.config_path, None  # no --config: the file is named by GATEWAY_CONFIG alone
    gw.env["GATEWAY_CONFIG"] = str(path)
    gw.start()
    prompt = "my medical history is private-7f3a"
    try:
        c = sdk(gw, CLIENT_KEY)
        assert [m.id for m in c.models.list()] == ["chat", "embed", "from-env"]
        c.chat.completions.create(model="chat", messages=[{"role": "user", "content": prompt}])
        list(c.chat.completions.create(model="chat", messages=[{"role": "user", "content": prompt}], stream=True))
        upstream.default("p-chat", Behaviour(status=500))
        upstream.default("s-chat", Behaviour(status=400, body=b'{"error": {"message": "bad"}}'))
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model="chat", messages=[{"role": "user", "content": prompt}])
        with pytest.raises(openai.AuthenticationError):
            sdk(gw, "sk-a-wrong-key-9d2e").models.list()
    finally:
        gw.stop()
    log = gw.log()
    assert "gateway.access" in log and "status=400" in log
    for secret in (prompt, "private-7f3a", "sk-upstream-primary", "sk-upstream-secondary", CLIENT_KEY,
                   "sk-a-wrong-key-9d2e"):
        assert secret not in log, secret
