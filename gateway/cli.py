"""The ``gateway`` command: serve, worker, check-config, simulator, mode, status."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from gateway import config as config_mod
from gateway import redaction
from gateway.errors import ConfigError

log = logging.getLogger("gateway")


def _load(path: str | None) -> config_mod.Config:
    try:
        return config_mod.load(path)
    except ConfigError as exc:
        print(f"gateway: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _uvicorn_run(app: object, host: str, port: int, grace_s: float) -> None:
    from gateway import server

    server.run(app, host, port, grace_s)


def cmd_serve(args: argparse.Namespace) -> None:
    from gateway.app import Gateway, build_admin_app, build_app
    from gateway.observability import logging as gw_logging
    from gateway.queue import redis_server

    cfg = _load(args.config)
    gw_logging.configure(cfg.server.log_level, cfg.server.log_format, redaction.from_config(cfg))
    host = args.host or cfg.server.host
    port = cfg.server.port if args.port is None else args.port
    if not cfg.auth.clients:
        log.warning("no client keys are configured: the API is open, and answers on loopback only")
    if not cfg.auth.admin_keys:
        log.warning("no admin keys are configured: the admin API answers on loopback only")
    home = Path(cfg.redis.private_dir)
    # Resolve Redis before serving so a missing Redis is one clear line, not a traceback.
    url, private = asyncio.run(redis_server.resolve(cfg.redis.url, cfg.redis.private, home))
    gateway = Gateway(cfg, run_worker=not args.no_worker, redis_url=url, private_redis=private)
    from gateway import server

    admin_port = cfg.server.admin_port
    log.info("serving on http://%s:%d", host, port)
    if admin_port is not None:
        log.info("admin API on http://%s:%d only", host, admin_port)
    server.run(
        build_app(gateway, admin=admin_port is None), host, port, cfg.server.shutdown_grace_s,
        max_connections=cfg.server.max_connections,
        admin_app=build_admin_app(gateway) if admin_port is not None else None, admin_port=admin_port,
    )


def cmd_worker(args: argparse.Namespace) -> None:
    from gateway.app import Gateway
    from gateway.observability import logging as gw_logging
    from gateway.queue import redis_server

    cfg = _load(args.config)
    gw_logging.configure(cfg.server.log_level, cfg.server.log_format, redaction.from_config(cfg))
    url, private = asyncio.run(redis_server.resolve(cfg.redis.url, cfg.redis.private, Path(cfg.redis.private_dir)))
    gateway = Gateway(cfg, run_worker=True, redis_url=url, private_redis=private)
    if args.port is None:
        _run_until_signal(gateway)
        return
    from gateway import server
    from gateway.app import build_worker_app

    # Probes and /metrics, so a worker can be scraped and health-checked like the API.
    host = args.host or cfg.server.host
    log.info("worker probes and metrics on http://%s:%d", host, args.port)
    server.run(build_worker_app(gateway), host, args.port, cfg.server.shutdown_grace_s)


def _run_until_signal(gateway: object) -> None:
    """Run the worker loops until SIGTERM/SIGINT, then stop intake and let in-flight jobs finish."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await gateway.start()  # type: ignore[attr-defined]
        log.info("worker running")
        try:
            await stop.wait()
        finally:
            log.info("worker stopping")
            await gateway.close()  # type: ignore[attr-defined]

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover
        asyncio.run(main())


def cmd_check_config(args: argparse.Namespace) -> None:
    cfg = _load(args.file)
    print(
        f"ok: {len(cfg.providers)} provider(s), {len(cfg.models)} model(s), {len(cfg.tiers)} tier(s), "
        f"{len(cfg.auth.clients)} client key(s)"
    )


def cmd_simulator(args: argparse.Namespace) -> None:
    from gateway.config import SimulatorConfig
    from gateway.observability import logging as gw_logging
    from gateway.simulator_server import build_simulator_app

    gw_logging.configure("warning", "auto")
    behaviour = SimulatorConfig(
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.jitter_ms,
        first_token_ms=args.first_token_ms,
        chunk_interval_ms=args.chunk_interval_ms,
        output_tokens=args.output_tokens,
        rate_limited_ratio=args.rate_limited_ratio,
        error_ratio=args.error_ratio,
    )
    _uvicorn_run(build_simulator_app(behaviour, args.seed), args.host, args.port, 5)


def cmd_drill(args: argparse.Namespace) -> None:
    from gateway.drill import runner

    runner.main(args)


def _console(args: argparse.Namespace) -> object:
    from gateway.console import Console

    return Console(args.url, args.admin_key)


def cmd_mode(args: argparse.Namespace) -> None:
    import json

    from gateway.console import parse_ttl

    console = _console(args)
    if args.action == "show":
        view = console.call("GET", "/admin/mode")  # type: ignore[attr-defined]
    elif args.action == "set":
        if not args.mode or args.mode not in ("normal", "degraded", "shed"):
            raise SystemExit("gateway: mode set needs MODE: normal, degraded or shed")
        if not args.reason:
            raise SystemExit("gateway: mode set needs --reason TEXT (it goes into the audit log)")
        body: dict[str, object] = {"mode": args.mode, "reason": args.reason}
        if args.provider:
            body["provider"] = args.provider
        if args.ttl:
            try:
                body["ttl_s"] = parse_ttl(args.ttl)
            except ValueError as exc:
                raise SystemExit(f"gateway: --ttl: {exc}") from None
        view = console.call("PUT", "/admin/mode", body)  # type: ignore[attr-defined]
    else:
        body = {"reason": args.reason} if args.reason else {}
        if args.provider:
            body["provider"] = args.provider
        view = console.call("DELETE", "/admin/mode", body)  # type: ignore[attr-defined]
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        console.show_modes(view)  # type: ignore[attr-defined]


def cmd_status(args: argparse.Namespace) -> None:
    import json

    console = _console(args)
    status = console.call("GET", "/admin/status")  # type: ignore[attr-defined]
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        console.show_status(status)  # type: ignore[attr-defined]


def _remote(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="the gateway (default: $GATEWAY_URL, else http://127.0.0.1:8080)")
    p.add_argument("--admin-key", help="admin key (default: $GATEWAY_ADMIN_KEY)")
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Hybrid realtime/batch LLM gateway.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve the API (and the worker loops unless --no-worker)")
    p.add_argument("--config", help="YAML config (default: $GATEWAY_CONFIG, else the embedded default)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--no-worker", action="store_true", help="do not run queue drainers in this process")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run the queue drainers and batch poller alone")
    p.add_argument("--config", help="YAML config (default: $GATEWAY_CONFIG, else the embedded default)")
    p.add_argument("--host", help="address for --port (default: server.host)")
    p.add_argument("--port", type=int, help="serve /healthz, /readyz and /metrics on this port")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("check-config", help="validate a config file")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("mode", help="show, set or clear degradation modes on a running gateway")
    p.add_argument("action", choices=["show", "set", "clear"])
    p.add_argument("mode", nargs="?", help="normal, degraded or shed (for set)")
    p.add_argument("--provider", help="scope the mode to one provider (default: global)")
    p.add_argument("--ttl", help="how long an override lasts, e.g. 90s, 30m, 2h (default: until cleared)")
    p.add_argument("--reason", help="why (required for set; recorded in the audit log)")
    _remote(p)
    p.set_defaults(func=cmd_mode)

    p = sub.add_parser("status", help="what a running gateway is doing: modes, health, queue, admission")
    _remote(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("simulator", help="run a standalone OpenAI-compatible fake provider")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--jitter-ms", type=float, default=5.0)
    p.add_argument("--first-token-ms", type=float, default=10.0)
    p.add_argument("--chunk-interval-ms", type=float, default=2.0)
    p.add_argument("--output-tokens", type=int, default=16)
    p.add_argument("--rate-limited-ratio", type=float, default=0.0)
    p.add_argument("--error-ratio", type=float, default=0.0)
    p.add_argument("--seed", type=int)
    p.set_defaults(func=cmd_simulator)

    p = sub.add_parser("drill", help="replay a workload through a provider incident: hybrid vs plain proxy, report")
    p.add_argument("--scenario", help="scenario YAML (default: config/scenarios/429-storm.yaml, or ci-short with --short)")
    p.add_argument("--out", help="report directory (default: drill-report/SCENARIO)")
    p.add_argument("--short", action="store_true", help="the short CI scenario when --scenario is not given")
    p.add_argument("--against", metavar="URL", help="drive this running gateway (one run) instead of starting stacks")
    p.add_argument("--simulator", action="append", metavar="NAME=URL",
                   help="with --against: the simulator behind provider NAME (repeat per provider)")
    p.add_argument("--client-key", action="append", metavar="NAME=KEY",
                   help="with --against: the API key of scenario client NAME (default sk-drill-NAME)")
    p.add_argument("--admin-key", help="with --against: admin key (default: $GATEWAY_ADMIN_KEY)")
    p.set_defaults(func=cmd_drill)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
