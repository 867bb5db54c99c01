"""Running the listeners: a runner whose low-level error answers never echo request bytes, and
whose every response says ``Server: authsidecar``.

aiohttp answers a request it cannot parse (a control character inside a ``Cookie`` header, an
over-long line, ...) before any middleware runs, and its default answer quotes the offending header
line in the body and logs it with a traceback. With a token in that cookie, that would be a token in
a response body and in the logs, so the sidecar's request handler answers with a fixed body and
logs only the status.

aiohttp offers no public hook for that answer, so :class:`SafeRequestHandler` overrides
``aiohttp.web_protocol.RequestHandler.handle_error`` and :class:`SafeAppRunner` makes its server
build that handler. Both rest on aiohttp internals: ``pyproject.toml`` pins the aiohttp releases
they were tested with, and ``tests/test_aiohttp_internals.py`` fails, naming the symbol, when an
upgrade changes one of them.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

from aiohttp import hdrs, web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from sidecar.admin import HEALTH
from sidecar.observability import LOGGER, route_stdlib_logging
from sidecar.proxy.forward import FORWARDER

# What every response of the sidecar's listeners says in `Server` (RFC 9110 §10.2.4): a product
# name, no versions (aiohttp's default names the Python and aiohttp releases).
SERVER: Final = "authsidecar"

_quiet = logging.getLogger("authsidecar.server")


class SafeRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response")
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        # Name the exception class only: its message may quote the raw request bytes.
        fields = {"status": status, "error": type(exc).__name__}
        if status >= 500:
            _quiet.error("request_failed", exc_info=exc, extra=fields)
        else:
            _quiet.warning("http_parser_rejected", extra=fields)
        body = f'{{"error": "bad_request", "reason": "{status} {phrase}"}}\n'
        # No request has been routed yet, so no app hook names the server: it is named here.
        resp = web.Response(status=status, text=body, content_type="application/json",
                            headers={hdrs.SERVER: SERVER, hdrs.CACHE_CONTROL: "no-store"})
        resp.force_close()
        return resp


class _SafeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return SafeRequestHandler(self, loop=self._loop, **self._kwargs)


async def _name_the_server(_request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: ``Server: authsidecar`` unless the response names its own server.

    aiohttp has put its default into ``Server`` by the time this runs; anything else there is the
    app's own header, relayed by the proxy, and stays.
    """
    headers = response.headers
    if headers.get(hdrs.SERVER) == SERVER_SOFTWARE:
        headers[hdrs.SERVER] = SERVER


class SafeAppRunner(web.AppRunner):
    """An ``AppRunner`` whose connections are served by :class:`SafeRequestHandler` and whose
    responses say ``Server: authsidecar``."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        app.on_response_prepare.append(_name_the_server)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _SafeServer
        return server


def tls_context(cert: Any, key: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


class Sidecar:
    """Both listeners of one sidecar process, started and stopped together."""

    def __init__(self, app: web.Application, admin_app: web.Application, settings: Any,
                 *, reuse_port: bool = False, sock: socket.socket | None = None) -> None:
        self.settings = settings
        self.app = app
        # An already bound listening socket for the proxied port (tests reserve the port up front).
        self.sock = sock
        # Workers of `serve --workers N` share both ports; the kernel spreads connections.
        self.reuse_port = reuse_port or None
        listen = settings.listen
        self.runner = SafeAppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=listen.shutdown_grace
        )
        self.admin_runner = SafeAppRunner(admin_app, handle_signals=False, access_log=None)
        self.port = 0
        self.admin_port = 0
        self._stopped = False
        self._unroute_logging: Callable[[], None] | None = None

    async def start(self) -> None:
        listen, adm = self.settings.listen, self.settings.admin
        log = self.app.get(LOGGER)
        if log is not None and self._unroute_logging is None:
            # aiohttp's and aiohttp-session's own lines join the sidecar's log stream.
            self._unroute_logging = route_stdlib_logging(log)
        ctx = tls_context(listen.tls_cert, listen.tls_key) if listen.tls_cert else None
        await self.runner.setup()
        site: web.BaseSite
        if self.sock is not None:
            site = web.SockSite(self.runner, self.sock, ssl_context=ctx)
        else:
            site = web.TCPSite(self.runner, listen.host, listen.port, ssl_context=ctx,
                               reuse_port=self.reuse_port)
        await site.start()
        self.port = _bound_port(self.runner)
        await self.admin_runner.setup()
        await web.TCPSite(self.admin_runner, adm.host, adm.port, reuse_port=self.reuse_port).start()
        self.admin_port = _bound_port(self.admin_runner)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the grace period), release all."""
        if self._stopped:
            return
        self._stopped = True
        # 1. No new connections; readiness already reports shutting down.
        for site in list(self.runner.sites):
            await site.stop()
        health = self.app.get(HEALTH)
        if health is not None:
            health.closing = True
        forwarder = self.app.get(FORWARDER)
        if forwarder is not None:
            # 2. Open WebSockets get the grace period to end on their own, before aiohttp's own
            # shutdown, which stops reading from every connection at once.
            await forwarder.drain_websockets(self.settings.listen.shutdown_grace)
        # 3. Idle connections closed, in-flight requests given the grace period, resources freed.
        try:
            await self.runner.cleanup()
            await self.admin_runner.cleanup()
        finally:
            if self._unroute_logging is not None:
                self._unroute_logging()
                self._unroute_logging = None


def _bound_port(runner: web.AppRunner) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple):
            return int(addr[1])
    return 0
