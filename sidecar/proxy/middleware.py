"""The edge middleware: request id, metrics, access log and the one place errors become HTTP.

The chain is deliberately short (see ``build_chain``): authentication, CSRF and authorization are
steps of the proxy route itself (``sidecar.proxy.gate``), so ``/auth/*`` never pays for them and a
request takes one straight path.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Middleware

from sidecar.errors import (
    AuthRejected,
    FlowRejected,
    ProviderError,
    RefreshFailed,
    SidecarError,
    TokenRejected,
    UpstreamError,
)
from sidecar.keys import IDENTITY, LOGIN_URL, REQUEST_ID, RESPONSE_HOOKS, ROUTE_CLASS, UPSTREAM_SECONDS
from sidecar.observability import AccessLog, Logger, Metrics
from sidecar.proxy.cors import CorsPolicy
from sidecar.store.base import StoreUnavailable

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A client-supplied request id is kept only when it is short and plainly printable.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
NO_STORE = "no-store"
# A reason our own code put into an HTTPException's text: a short fixed identifier.
_REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Where a forward-auth 401 names the login URL (the gateway's error page sends the browser there).
LOGIN_HEADER: Final = "X-Authsidecar-Login"
# Headers of an HTTPException that describe its plain-text body, replaced by the JSON one's.
_BODY_HEADERS: Final = frozenset({"content-type", "content-length", "content-encoding"})


def is_navigation(request: web.Request) -> bool:
    """A top-level browser navigation, which should be sent to log in rather than given a 401."""
    if request.method not in ("GET", "HEAD"):
        return False
    mode = request.headers.get("Sec-Fetch-Mode")
    if mode is not None:
        return mode == "navigate"
    return "text/html" in request.headers.get("Accept", "")


def wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


class ErrorMapper:
    """Maps every :class:`SidecarError`, and every aiohttp ``HTTPException`` of 400 or more, to its
    HTTP response. Handlers never build error bodies."""

    def __init__(self, *, login_path: str, public_origin: str):
        self.login_path = login_path
        self.public_origin = public_origin

    def response(self, request: web.Request, exc: SidecarError) -> web.Response:
        if isinstance(exc, (RefreshFailed, TokenRejected)):
            reason = exc.reason
            # Forward-auth never redirects: nginx's auth_request takes only 2xx, 401 and 403, and
            # the gateway's own error page sends the browser to the login URL named below.
            login = request.get(LOGIN_URL)
            if login is None and is_navigation(request):
                # As sent: the decoded form would turn `q=a%26b` into two parameters on the way back.
                target = self.public_origin + request.rel_url.raw_path_qs
                location = f"{self.login_path}?return_to={quote(target, safe='')}"
                resp = web.Response(status=302, headers={"Location": location, "Cache-Control": NO_STORE})
            else:
                resp = _json(401, "unauthorized", reason)
                error = "" if reason == "missing" else ', error="invalid_token"'
                resp.headers["WWW-Authenticate"] = f'Bearer realm="authsidecar"{error}'
                if login is not None:
                    resp.headers[LOGIN_HEADER] = login
            return resp
        if isinstance(exc, FlowRejected):
            return _page_or_json(request, 400, exc.error, exc.reason, "The sign-in could not be completed.")
        if isinstance(exc, AuthRejected):
            return _json(exc.status, exc.error, exc.reason)
        if isinstance(exc, ProviderError):
            status = 503 if exc.reason == "not_ready" else 502
            return _page_or_json(
                request, status, "provider_unavailable", exc.reason,
                "The sign-in service is not reachable right now. Please try again shortly.",
            )
        if isinstance(exc, UpstreamError):
            return _json(exc.status, "upstream_unavailable", exc.kind)
        if isinstance(exc, StoreUnavailable):
            # Server sessions with Redis unreachable: try again shortly. Never a 401 (a login loop)
            # and never a cleared session: the session is intact in Redis.
            resp = _json(503, "session_store_unavailable", exc.reason)
            resp.headers["Retry-After"] = "1"
            return resp
        return _json(500, "internal_error", "unexpected")

    @staticmethod
    def http_error(exc: web.HTTPException) -> web.Response:
        """An aiohttp ``HTTPException`` (status >= 400) in the JSON shape of every other error.

        aiohttp raises these itself (router 404/405) and so do a few handlers (``/auth/*`` 404/405,
        a bad WebSocket handshake). ``error`` is the status's name (``not_found``); ``reason`` is
        the exception's text when our code put a fixed identifier there (``websocket_handshake``),
        else the same name: aiohttp's own texts are prose and never shown. Headers that belong to
        the status (``Allow`` of a 405, RFC 9110 §15.5.6) are kept.
        """
        status = exc.status
        error = _status_name(status)
        text = exc.text
        reason = text if text is not None and _REASON.fullmatch(text) else error
        resp = _json(status, error, reason)
        for name, value in exc.headers.items():
            if name.lower() not in _BODY_HEADERS and name not in resp.headers:
                resp.headers.add(name, value)
        return resp


def _status_name(status: int) -> str:
    """The ``http.HTTPStatus`` phrase as an identifier: 404 -> ``not_found``, 405 -> ``method_not_allowed``.

    (Python 3.13 renamed a few phrases, 413 among them; the image runs 3.11.)
    """
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "client_error" if status < 500 else "server_error"
    return re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_")


def _json(status: int, error: str, reason: str) -> web.Response:
    return web.json_response({"error": error, "reason": reason}, status=status,
                             headers={"Cache-Control": NO_STORE})


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1><p>{message}</p><p>Reference: <code>{reason}</code></p>
<p><a href="/auth/login">Sign in again</a></p></body></html>
"""


def _page_or_json(request: web.Request, status: int, error: str, reason: str, message: str) -> web.Response:
    if not wants_html(request):
        return _json(status, error, reason)
    body = _PAGE.format(title=f"{status} — sign-in problem", message=message, reason=reason)
    return web.Response(status=status, text=body, content_type="text/html",
                        headers={"Cache-Control": NO_STORE})


def edge_middleware(metrics: Metrics, log: Logger, mapper: ErrorMapper, *, access_log: bool) -> Middleware:
    """Outermost link: request id in and out, in-flight gauge, status counter, access log, errors."""
    requests = metrics.requests
    in_flight = metrics.in_flight
    access = AccessLog(log, access_log)
    rejection_log = RejectionLog(log)
    counters: dict[tuple[str, int], Any] = {}
    # Request ids: a random per-process prefix and a counter. Unique without a syscall per request
    # (uuid4 reads os.urandom every time); they identify, they are not secrets.
    prefix = uuid.uuid4().hex[:16]
    sequence = itertools.count(1)

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request.headers.get("X-Request-Id")
        if rid is None or _REQUEST_ID.fullmatch(rid) is None:
            rid = f"{prefix}{next(sequence):x}"
        request[REQUEST_ID] = rid
        start = time.perf_counter()
        in_flight.inc()
        status = 500
        try:
            try:
                response = await handler(request)
            except SidecarError as exc:
                response = mapper.response(request, exc)
                _log_rejection(log, rejection_log, request, exc, rid)
            except web.HTTPException as exc:
                if exc.status < 400:
                    # Redirects and the like stay aiohttp's to send.
                    status = exc.status
                    raise
                response = mapper.http_error(exc)
            except Exception:
                log.exception("unhandled_error", request_id=rid, method=request.method)
                response = _json(500, "internal_error", "unexpected")
            status = response.status
            return response
        finally:
            in_flight.dec()
            route = request.get(ROUTE_CLASS, "other")
            key = (route, status)
            counter = counters.get(key)
            if counter is None:
                counter = counters[key] = requests.labels(route, str(status))
            counter.inc()
            if access.enabled:
                identity = request.get(IDENTITY)
                upstream = request.get(UPSTREAM_SECONDS)
                access(
                    request.method, route, status, round((time.perf_counter() - start) * 1000, 3),
                    None if upstream is None else round(upstream * 1000, 3),
                    None if identity is None else identity.sub, rid,
                )

    return edge


class RejectionLog:
    """The ``auth_rejected`` line, at most once a second per reason, with how many it stands for.

    Under a flood of forged or garbage credentials a line per request would cost more than the
    refusal itself (a structlog line is ~30 µs) and bury the log; every refusal is still counted in
    ``authsidecar_auth_decisions_total``. A line carries ``suppressed``: the refusals of that reason
    since the previous line that got none of their own.
    """

    def __init__(self, log: Logger, *, interval: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._interval = interval
        self._monotonic = monotonic
        # reason -> (when its last line was written, refusals since without a line)
        self._last: dict[str, tuple[float, int]] = {}

    def __call__(self, exc: AuthRejected, request_id: str) -> None:
        now = self._monotonic()
        last = self._last.get(exc.reason)
        if last is not None and now - last[0] < self._interval:
            self._last[exc.reason] = (last[0], last[1] + 1)
            return
        suppressed = last[1] if last is not None else 0
        self._last[exc.reason] = (now, 0)
        self._log.info("auth_rejected", reason=exc.reason, kind=type(exc).__name__, request_id=request_id,
                       suppressed=suppressed)


def _log_rejection(log: Logger, rejections: RejectionLog, request: web.Request, exc: SidecarError,
                   rid: str) -> None:
    if isinstance(exc, UpstreamError):
        log.warning("upstream_error", kind=exc.kind, request_id=rid, method=request.method)
    elif isinstance(exc, ProviderError):
        log.warning("provider_error", reason=exc.reason, request_id=rid)
    elif isinstance(exc, AuthRejected) and exc.reason != "missing":
        rejections(exc, rid)


def cors_middleware(cors: CorsPolicy, metrics: Metrics) -> Middleware:
    """Answers preflights for the allowed origins; refuses others without any CORS header."""
    rejections = metrics.cors_rejections

    @web.middleware
    async def cors_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            request[ROUTE_CLASS] = "preflight"
            headers = cors.preflight(
                origin,
                request.headers["Access-Control-Request-Method"],
                request.headers.get("Access-Control-Request-Headers", ""),
            )
            if headers is None:
                rejections.inc()
                return _json(403, "cors_rejected", "origin_not_allowed")
            return web.Response(status=204, headers=headers)
        if not cors.allows(origin):
            rejections.inc()
        return await handler(request)

    return cors_mw


Decorator = Callable[[web.Request, web.StreamResponse], Awaitable[None]]


def response_decorator(cors: CorsPolicy | None) -> Decorator:
    """``on_response_prepare``: the last word on headers of every response, streamed ones included.

    Adds the request id, CORS headers for allowed origins, ``Cache-Control: no-store`` under /auth/,
    and runs the request's response hooks (the new cookies of a transparent refresh).
    """

    async def decorate(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        rid = request.get(REQUEST_ID)
        if rid is not None and "X-Request-Id" not in headers:
            headers["X-Request-Id"] = rid
        hooks = request.get(RESPONSE_HOOKS)
        if hooks:
            for hook in hooks:
                hook(response)
        if request.path.startswith("/auth/"):
            headers["Cache-Control"] = NO_STORE
        if cors and request.get(ROUTE_CLASS) != "preflight":
            # (A preflight carries its own answer; a refused one must carry no CORS header at all.)
            origin = request.headers.get("Origin")
            if origin is not None and cors.allows(origin):
                headers.update(cors.actual(origin))
                headers.add("Vary", "Origin")

    return decorate


def http_error_middleware() -> Middleware:
    """For a listener without the edge (the admin one): aiohttp's 404/405 in the JSON shape too."""

    @web.middleware
    async def http_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return ErrorMapper.http_error(exc)

    return http_errors
