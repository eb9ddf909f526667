"""The mode controller: shared health windows, automatic transitions, operator overrides, audit.

Every replica flushes its health slices to Redis and refreshes the shared mode
state twice a second, so the hot path reads modes from memory and replicas
agree within a second. One replica at a time (a lease in Redis) evaluates the
summed windows and writes automatic transitions. If Redis is away, each replica
keeps serving with the last state it knew and decides on its own figures.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.config import Config
from gateway.errors import QueueUnavailable
from gateway.health import Slice, Window, figures
from gateway.modes import GLOBAL, AutoState, Override, Source, effective, resolve, transition
from gateway.observability.metrics import Metrics
from gateway.observability.tracing import Tracing
from gateway.queue.keys import Keys
from gateway.queue.store import LEASE
from gateway.router import Outcome
from gateway.severity import Mode

log = logging.getLogger("gateway.modes")

TICK_S = 0.5
LEASE_MS = 3000
AUDIT_MAXLEN = 10000


@dataclass(frozen=True, slots=True)
class ScopeView:
    mode: Mode
    source: str
    auto: AutoState
    override: Override | None


class ModeController:
    def __init__(self, config: Config, redis: aioredis.Redis, keys: Keys, metrics: Metrics,
                 tracing: Tracing | None = None) -> None:
        self.config = config
        self.tracing = tracing or Tracing()
        self.cfg = config.degradation
        self.redis = redis
        self.keys = keys
        self.metrics = metrics
        self.window = Window(self.cfg.window_s)
        self.me = f"{os.uname().nodename}-{os.getpid()}-{id(self):x}"
        self.scopes = [GLOBAL, *config.providers]
        self.first_provider = {m: c.targets[0].provider for m, c in config.models.items()}
        self.auto: dict[str, AutoState] = {s: AutoState() for s in self.scopes}
        self.overrides: dict[str, Override] = {}
        self.leader = False
        self.shared = False  # whether the last tick reached Redis
        self._by_model: dict[str, Mode] = {m: Mode.NORMAL for m in config.models}
        self._expires_next: float | None = None  # when the next override ends
        self._last_effective: dict[str, Mode] = {}
        self._lease = redis.register_script(LEASE)
        # Transitions decided but not yet written to the audit stream (kept while Redis is away).
        self._pending_audit: list[tuple[str, Mode, Mode, str, str, str, dict[str, Any]]] = []
        self.stopping = False
        self._recompute(time.time())

    # -- the hot path

    def observe(self, outcome: Outcome) -> None:
        self.window.observe(outcome, time.time())

    def effective(self, model: str) -> Mode:
        if self._expires_next is not None and time.time() >= self._expires_next:
            self._recompute(time.time())  # an override just ended: apply that now, not at the next tick
        return self._by_model.get(model, Mode.NORMAL)

    def scope(self, name: str, now: float | None = None) -> ScopeView:
        now = time.time() if now is None else now
        auto = self.auto.get(name, AutoState())
        override = self.overrides.get(name)
        if override is not None and not override.active(now):
            override = None
        mode, source = resolve(auto.mode, override, now)
        return ScopeView(mode, source, auto, override)

    def provider_mode(self, provider: str) -> Mode:
        return effective(self.scope(GLOBAL).mode, self.scope(provider).mode)

    # -- the loop

    async def run(self) -> None:
        while not self.stopping:
            try:
                await self.tick(time.time())
            except Exception:  # noqa: BLE001 - the controller must outlive any one bad tick
                log.exception("mode controller tick failed")
            await asyncio.sleep(TICK_S)

    async def tick(self, now: float) -> None:
        try:
            await self._flush()
            self.leader = bool(await self._lease(keys=[self.keys.mode_leader], args=[self.me, LEASE_MS]))
            if self.leader and self.cfg.enabled:
                await self._evaluate_shared(now)
            await self._refresh(now)
            self.shared = True
        except (RedisError, OSError):
            # Alone: decide on this replica's own window, keep the overrides we knew.
            self.shared = False
            self.leader = False
            if self.cfg.enabled:
                for scope in self.config.providers:
                    self._apply_auto(scope, self.window.local_figures(scope, now), now, write=False)
        self._recompute(now)

    async def _flush(self) -> None:
        pending = self.window.take_pending()
        if not pending:
            return
        ttl = int(self.cfg.window_s) + 10
        async with self.redis.pipeline(transaction=False) as pipe:
            for scope, slices in pending.items():
                for sec, s in slices.items():
                    key = self.keys.health_slice(scope, sec)
                    for name, count in s.to_fields().items():
                        pipe.hincrby(key, name, count)
                    pipe.expire(key, ttl)
            await pipe.execute()

    async def shared_figures(self, scope: str, now: float) -> Any:
        secs = range(int(now) - int(self.cfg.window_s) + 1, int(now) + 1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for sec in secs:
                pipe.hgetall(self.keys.health_slice(scope, sec))
            rows = await pipe.execute()
        return figures(Slice.from_fields(r) for r in rows if r)

    async def _evaluate_shared(self, now: float) -> None:
        raw = await self.redis.hgetall(self.keys.mode_auto)
        for k, v in raw.items():
            self.auto[k.decode()] = AutoState.from_dict(orjson.loads(v))
        for scope in self.config.providers:
            self._apply_auto(scope, await self.shared_figures(scope, now), now, write=True)
        await self.redis.hset(self.keys.mode_auto, mapping={s: orjson.dumps(a.to_dict()) for s, a in self.auto.items()})
        await self.redis.expire(self.keys.mode_auto, 86400)

    def _apply_auto(self, scope: str, figs: Any, now: float, write: bool) -> None:
        before = self.auto.get(scope, AutoState())
        after = transition(before, figs, self.cfg, now)
        self.auto[scope] = after
        self._recompute(now)  # requests follow what GET /admin/mode shows at once, not after the next awaits
        if after.mode is not before.mode and len(self._pending_audit) < 1000:
            self._pending_audit.append((scope, before.mode, after.mode, Source.AUTO, "controller", after.reason, after.figures))

    async def _refresh(self, now: float) -> None:
        if not self.leader:
            raw = await self.redis.hgetall(self.keys.mode_auto)
            for k, v in raw.items():
                self.auto[k.decode()] = AutoState.from_dict(orjson.loads(v))
        values = await self.redis.mget([self.keys.mode_override(s) for s in self.scopes])
        seen: dict[str, Override] = {}
        for scope, v in zip(self.scopes, values):
            if v:
                seen[scope] = Override.from_dict(orjson.loads(v))
        if self.leader:
            for scope, old in self.overrides.items():
                gone = scope not in seen or not seen[scope].active(now)
                if gone and old.expires_at is not None and old.expires_at <= now + TICK_S:
                    to = self.auto.get(scope, AutoState()).mode
                    self._pending_audit.append((scope, old.mode, to, Source.OPERATOR, old.actor, "override expired", {}))
        self.overrides = seen
        self._recompute(now)
        await self._write_audit()

    async def _write_audit(self) -> None:
        while self._pending_audit:
            scope, frm, to, source, actor, reason, figs = self._pending_audit.pop(0)
            await self._record(scope, frm, to, source, actor, reason, figs)

    async def _record(self, scope: str, frm: Mode, to: Mode, source: str, actor: str, reason: str,
                      figs: dict[str, Any]) -> None:
        entry = {"time": time.time(), "scope": scope, "from": frm.value, "to": to.value, "source": source,
                 "actor": actor, "reason": reason, "figures": figs}
        self.metrics.mode_transitions.labels(scope, frm.value, to.value, source).inc()
        if self.tracing.enabled:
            self.tracing.event("gateway.mode.transition", {"gateway.scope": scope, "gateway.mode.from": frm.value,
                                                           "gateway.mode.to": to.value, "gateway.mode.source": source,
                                                           "gateway.mode.reason": reason})
        log.warning("mode %s: %s -> %s (%s)", scope, frm.value, to.value, source,
                    extra={"fields": {"scope": scope, "from": frm.value, "to": to.value, "source": source,
                                      "actor": actor, "reason": reason}})
        try:
            await self.redis.xadd(self.keys.audit, {"e": orjson.dumps(entry)}, maxlen=AUDIT_MAXLEN, approximate=True)
            await self.redis.publish(self.keys.mode_channel, scope)
        except (RedisError, OSError):
            log.warning("audit record not stored: Redis is unavailable")

    def _recompute(self, now: float) -> None:
        global_mode = self.scope(GLOBAL, now).mode
        by_provider = {p: self.scope(p, now).mode for p in self.config.providers}
        self._by_model = {m: effective(global_mode, by_provider[p]) for m, p in self.first_provider.items()}
        self._expires_next = min((o.expires_at for o in self.overrides.values()
                                  if o.expires_at is not None and o.active(now)), default=None)
        for scope in self.scopes:
            mode = global_mode if scope == GLOBAL else by_provider[scope]
            if self._last_effective.get(scope) is not mode:
                for m in Mode:
                    self.metrics.mode.labels(scope, m.value).set(1 if m is mode else 0)
                self._last_effective[scope] = mode

    # -- operator control

    async def set_override(self, scope: str, mode: Mode, ttl_s: float | None, reason: str, actor: str) -> ScopeView:
        now = time.time()
        before = self.scope(scope, now).mode
        ov = Override(mode, reason, actor, now, now + ttl_s if ttl_s else None)
        try:
            await self.redis.set(self.keys.mode_override(scope), orjson.dumps(ov.to_dict()),
                                 px=max(int(ttl_s * 1000), 1) if ttl_s else None)
        except (RedisError, OSError):
            raise QueueUnavailable("Mode overrides are shared through Redis, which is unavailable.") from None
        self.overrides[scope] = ov
        await self._record(scope, before, mode, Source.OPERATOR, actor, reason, {})
        self._recompute(now)
        return self.scope(scope, now)

    async def clear_override(self, scope: str, actor: str, reason: str) -> ScopeView:
        now = time.time()
        before = self.scope(scope, now).mode
        try:
            await self.redis.delete(self.keys.mode_override(scope))
        except (RedisError, OSError):
            raise QueueUnavailable("Mode overrides are shared through Redis, which is unavailable.") from None
        had = self.overrides.pop(scope, None)
        after = self.auto.get(scope, AutoState()).mode
        if had is not None:
            await self._record(scope, before, after, Source.OPERATOR, actor, reason or "override cleared", {})
        self._recompute(now)
        return self.scope(scope, now)

    async def audit(self, limit: int) -> list[dict[str, Any]]:
        try:
            rows = await self.redis.xrevrange(self.keys.audit, count=limit)
        except (RedisError, OSError):
            raise QueueUnavailable("The audit log lives in Redis, which is unavailable.") from None
        return [orjson.loads(fields[b"e"]) for _, fields in rows]

    async def audit_action(self, action: str, actor: str, details: dict[str, Any], reason: str = "") -> None:
        """Record an operator action other than a mode change (a job cancelled, say) in the same audit log."""
        entry = {"time": time.time(), "action": action, "scope": None, "actor": actor, "reason": reason,
                 "details": details}
        log.warning("operator action %s by %s", action, actor,
                    extra={"fields": {"action": action, "actor": actor, "reason": reason, **details}})
        try:
            await self.redis.xadd(self.keys.audit, {"e": orjson.dumps(entry)}, maxlen=AUDIT_MAXLEN, approximate=True)
        except (RedisError, OSError):
            log.warning("audit record not stored: Redis is unavailable")

    def describe(self, now: float | None = None) -> dict[str, Any]:
        """Every scope's effective mode, its source, the override and the figures behind it."""
        now = time.time() if now is None else now
        out: dict[str, Any] = {}
        for scope in self.scopes:
            view = self.scope(scope, now)
            item: dict[str, Any] = {
                "mode": view.mode.value,
                "source": view.source,
                "auto": {"mode": view.auto.mode.value, "since": view.auto.since, "reason": view.auto.reason,
                         "figures": view.auto.figures},
                "override": None,
            }
            if view.override is not None:
                o = view.override
                item["override"] = {**o.to_dict(), "ttl_remaining_s": None if o.expires_at is None
                                    else round(max(o.expires_at - now, 0.0), 1)}
            out[scope] = item
        return out
