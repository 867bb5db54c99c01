"""Command line: ``authsidecar serve | check-config | dev``.

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
from sidecar.config import Settings, load_settings, redacted
from sidecar.errors import ConfigError

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authsidecar", description="OIDC / Cognito auth proxy sidecar")
    parser.add_argument("--version", action="version", version=f"authsidecar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    default_config = os.environ.get("AUTHSIDECAR_CONFIG")
    serve = sub.add_parser("serve", help="run the sidecar")
    serve.add_argument("--config", default=default_config, help="YAML file (env: AUTHSIDECAR_CONFIG)")
    check = sub.add_parser("check-config", help="validate and print the effective config, secrets masked")
    check.add_argument("--config", default=default_config, help="YAML file (env: AUTHSIDECAR_CONFIG)")
    dev = sub.add_parser("dev", help="run a dev provider, a demo app and the sidecar on this machine")
    dev.add_argument("--port", type=int, default=8080, help="sidecar port (default 8080)")
    dev.add_argument("--admin-port", type=int, default=9464, help="admin port (default 9464)")
    dev.add_argument("--host", default="127.0.0.1", help="sidecar bind address (default 127.0.0.1)")
    return parser


def _config_error(exc: ConfigError) -> int:
    for message in exc.messages:
        print(f"authsidecar: config error: {message}", file=sys.stderr)
    return EXIT_CONFIG


def _run(coro_factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency except on Windows
        asyncio.run(coro_factory())
    else:
        uvloop.run(coro_factory())


async def serve(settings: Settings) -> None:
    from sidecar.app import create_admin_app, create_app
    from sidecar.keys import RUNTIME
    from sidecar.server import Sidecar

    app = create_app(settings)
    runtime = app[RUNTIME]
    sidecar = Sidecar(app, create_admin_app(runtime), settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await sidecar.start()
    runtime.log.info("listening", port=sidecar.port, admin_port=sidecar.admin_port,
                     upstream=settings.upstream.url, issuer=settings.oidc.issuer)
    await stop.wait()
    runtime.log.info("shutting_down", grace_s=settings.listen.shutdown_grace)
    runtime.closing = True
    await sidecar.stop()
    runtime.log.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "dev":
        from sidecar.dev.run import run_dev

        _run(lambda: run_dev(host=args.host, port=args.port, admin_port=args.admin_port))
        return 0
    try:
        settings = load_settings(args.config, os.environ)
    except ConfigError as exc:
        return _config_error(exc)
    if args.command == "check-config":
        print(json.dumps(redacted(settings), indent=2))
        return 0
    _run(lambda: serve(settings))
    return 0
