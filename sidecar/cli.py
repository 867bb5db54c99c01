"""Command line: ``authsidecar serve | check-config | dev | inject``.

The only module that prints and exits: a :class:`ConfigError` becomes one line per problem on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from sidecar import __version__
from sidecar.config import Settings, config_warnings
from sidecar.config_load import SECRET_ENV, load_settings, redacted, with_runtime_defaults
from sidecar.errors import ConfigError
from sidecar.observability import Logger
from sidecar.supervisor import WORKER_FLAG

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authsidecar", description="OIDC / Cognito auth proxy sidecar")
    parser.add_argument("--version", action="version", version=f"authsidecar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    default_config = os.environ.get("AUTHSIDECAR_CONFIG")
    serve = sub.add_parser("serve", help="run the sidecar")
    serve.add_argument("--config", default=default_config, help="YAML file (env: AUTHSIDECAR_CONFIG)")
    serve.add_argument("--workers", type=int, default=None,
                       help="processes sharing the ports (default: the config's workers, 1)")
    serve.add_argument(WORKER_FLAG, action="store_true", help=argparse.SUPPRESS)
    check = sub.add_parser("check-config", help="validate and print the effective config, secrets masked")
    check.add_argument("--config", default=default_config, help="YAML file (env: AUTHSIDECAR_CONFIG)")
    dev = sub.add_parser("dev", help="run a dev provider, a demo app and the sidecar on this machine")
    dev.add_argument("--port", type=int, default=8080, help="sidecar port (default 8080)")
    dev.add_argument("--admin-port", type=int, default=9464, help="admin port (default 9464)")
    dev.add_argument("--host", default="127.0.0.1", help="sidecar bind address (default 127.0.0.1)")
    inject = sub.add_parser("inject", help="run the Kubernetes sidecar injector (mutating webhook)")
    inject.add_argument("--config", required=True, help="the injector's YAML file")
    return parser


DEV_MODE_WARNING = ("dev_mode is on: http:// issuers and non-Secure cookies are allowed; "
                    "never run this in production")
GENERATED_KEY_NOTICE = ("no cookies.secret in dev_mode: a random one was generated for this run "
                        "(logins in flight do not survive a restart)")


def _config_error(exc: ConfigError) -> int:
    for message in exc.messages:
        print(f"authsidecar: config error: {message}", file=sys.stderr)
    return EXIT_CONFIG


def _run(coro_factory: Callable[[], Coroutine[Any, Any, int | None]]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency except on Windows
        return asyncio.run(coro_factory()) or 0
    return uvloop.run(coro_factory()) or 0


async def serve(settings: Settings, *, reuse_port: bool = False, secret_generated: bool = False,
                host_store: str | None = None) -> int:
    """Run one sidecar process until SIGTERM/SIGINT. ``settings`` must carry a cookie secret.

    ``host_store``: the supervisor's store socket, for a worker of ``serve --workers N``.
    """
    from sidecar.admin import HEALTH
    from sidecar.app import admin_app_for, create_app
    from sidecar.observability import flush_logs, make_logger
    from sidecar.server import Sidecar

    if settings.cookies.secret is None:
        raise ValueError("serve needs cookies.secret; pass the settings through with_runtime_defaults")
    # Batched: one write per 20 ms of log lines rather than a write and a flush per line.
    log = make_logger(settings.logging.level, settings.logging.format, batched=True)
    app = create_app(settings, log=log, host_store=host_store)
    _log_start_up(log, settings, secret_generated=secret_generated)
    sidecar = Sidecar(app, admin_app_for(app), settings, reuse_port=reuse_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await sidecar.start()
    except OSError as exc:
        # Port taken, address not available: one line, not a traceback.
        await sidecar.stop()
        print(f"authsidecar: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    log.info("listening", port=sidecar.port, admin_port=sidecar.admin_port,
             upstream=settings.upstream.url if settings.upstream else None, issuer=settings.oidc.issuer)
    await stop.wait()
    log.info("shutting_down", grace_s=settings.listen.shutdown_grace)
    app[HEALTH].closing = True
    await sidecar.stop()
    log.info("stopped")
    flush_logs(log)
    return 0


def _log_start_up(log: Logger, settings: Settings, *, secret_generated: bool) -> None:
    """The loud lines before ``listening``: dev mode, a generated secret, patterns that look wrong."""
    if settings.dev_mode:
        log.warning("dev_mode_enabled", detail=DEV_MODE_WARNING)
    if secret_generated:
        log.warning("cookie_secret_generated", detail=GENERATED_KEY_NOTICE)
    for line in config_warnings(settings):
        log.warning("config_warning", detail=line)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "dev":
        from sidecar.dev.run import run_dev

        return _run(lambda: run_dev(host=args.host, port=args.port, admin_port=args.admin_port))
    if args.command == "inject":
        from sidecar.inject.server import serve_injector
        from sidecar.inject.settings import load_injector_settings

        try:
            injector_settings = load_injector_settings(args.config)
        except ConfigError as exc:
            return _config_error(exc)
        return _run(lambda: serve_injector(injector_settings))
    try:
        settings = load_settings(args.config, os.environ)
    except ConfigError as exc:
        return _config_error(exc)
    if args.command == "check-config":
        for line in config_warnings(settings):
            print(f"authsidecar: config warning: {line}", file=sys.stderr)
        print(json.dumps(redacted(settings), indent=2))
        return 0
    workers = args.workers if args.workers is not None else settings.workers
    if workers < 1:
        print("authsidecar: config error: --workers: must be at least 1", file=sys.stderr)
        return EXIT_CONFIG
    secret_generated = settings.cookies.secret is None
    settings = with_runtime_defaults(settings)
    if workers > 1 and not args.worker:
        from sidecar.observability import make_logger
        from sidecar.supervisor import supervise

        if secret_generated and settings.cookies.secret is not None:
            # One secret for every worker, so CSRF tokens and login transactions work across them.
            os.environ[SECRET_ENV] = settings.cookies.secret.get_secret_value()
            log = make_logger(settings.logging.level, settings.logging.format)
            log.warning("cookie_secret_generated", detail=GENERATED_KEY_NOTICE, workers=workers)
        return supervise(workers, ["--config", args.config] if args.config else [],
                         host_store=settings.store.backend == "memory")
    from sidecar.store.host import HOST_STORE_ENV

    host_store = os.environ.get(HOST_STORE_ENV) if args.worker else None
    return _run(lambda: serve(settings, reuse_port=args.worker, secret_generated=secret_generated,
                              host_store=host_store))
