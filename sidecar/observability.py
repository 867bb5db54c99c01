"""Metrics and structured logging.

Every metric lives on a :class:`Metrics` object built on an injected ``CollectorRegistry`` (tests get
a fresh one; nothing is registered at import time). Label values are fixed, low-cardinality
identifiers: never a user, a path or a token.

Every log line goes through one structlog chain (level, timestamp, redaction, JSON) into one
:class:`LineWriter`; lines of the standard library's ``logging`` (aiohttp, aiohttp-session, the
server's parser rejections) join that chain while the listeners run (:func:`route_stdlib_logging`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol, TextIO

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sidecar import __version__

_FAST = (0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)
_NET = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """All of authsidecar's metrics, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "authsidecar_"
        self.requests = Counter(
            p + "requests_total", "Requests served, by route class and status code.",
            ["route", "code"], registry=registry,
        )
        self.in_flight = Gauge(
            p + "requests_in_flight", "Requests being served now.", registry=registry,
            multiprocess_mode="livesum",
        )
        self.auth_decisions = Counter(
            p + "auth_decisions_total", "Authentication / authorization decisions, by outcome.",
            ["outcome"], registry=registry,
        )
        self.validation_seconds = Histogram(
            p + "token_validation_seconds", "Time to validate an access token (cache misses only).",
            buckets=_FAST, registry=registry,
        )
        self.validation_cache = Counter(
            p + "token_validation_cache_total", "Validated-token cache lookups, by result.",
            ["result"], registry=registry,
        )
        self.jwks_refreshes = Counter(
            p + "jwks_refreshes_total", "JWKS fetches, by reason and result.",
            ["reason", "result"], registry=registry,
        )
        self.jwks_last_success = Gauge(
            p + "jwks_last_success_timestamp_seconds", "Unix time of the last successful JWKS fetch.",
            registry=registry, multiprocess_mode="max",
        )
        self.jwks_keys = Gauge(
            p + "jwks_keys", "Signing keys currently loaded.", registry=registry,
            multiprocess_mode="max",
        )
        self.token_requests = Counter(
            p + "token_endpoint_requests_total", "Requests to the provider's token endpoint.",
            ["grant", "outcome"], registry=registry,
        )
        self.token_request_seconds = Histogram(
            p + "token_endpoint_request_seconds", "Duration of token endpoint requests.",
            ["grant"], buckets=_NET, registry=registry,
        )
        self.flow_events = Counter(
            p + "flow_events_total", "Browser flow events (login, callback, refresh, logout) by outcome.",
            ["event", "outcome"], registry=registry,
        )
        self.csrf_rejections = Counter(
            p + "csrf_rejections_total", "Requests refused by the CSRF checks, by reason.",
            ["reason"], registry=registry,
        )
        self.cors_rejections = Counter(
            p + "cors_rejections_total", "Cross-origin requests from origins not allowed.",
            registry=registry,
        )
        self.upstream_seconds = Histogram(
            p + "upstream_request_seconds", "Time until the app's response headers arrived.",
            buckets=_NET, registry=registry,
        )
        self.upstream_errors = Counter(
            p + "upstream_errors_total", "Failed requests to the app, by kind.",
            ["kind"], registry=registry,
        )
        self.store_errors = Counter(
            p + "store_errors_total",
            "Shared-store operations that failed, by store (memory, host, redis) and kind (timeout: "
            "there but too slow; unavailable: refused or connection lost).",
            ["store", "kind"], registry=registry,
        )
        self.revocations = Counter(
            p + "revocations_total", "Sessions or users revoked, by source (logout, admin, backchannel).",
            ["source"], registry=registry,
        )
        self.session_cookie_bytes = Histogram(
            p + "session_cookie_bytes",
            "Bytes of the cookies one login or refresh sets (token-cookie mode): what browsers send back.",
            buckets=(1024, 2048, 4096, 6144, 8192, 10240, 16384, 32768), registry=registry,
        )
        self.refresh_coordination = Counter(
            p + "refresh_coordination_total",
            "Refreshes by role across processes: led (made the token request), joined (took another "
            "process's result), alone (the shared store is down: this process only), timeout (the "
            "store was too slow to tell whether another process refreshes: answered 503, no token request).",
            ["role"], registry=registry,
        )
        self.provider_errors = Counter(
            p + "provider_errors_total", "Failed calls to the OpenID provider, by endpoint.",
            ["endpoint"], registry=registry,
        )
        # A gauge rather than an Info: Info is not supported in multiprocess mode.
        self.build = Gauge(p + "build_info", "Build information (always 1).", ["version"],
                           registry=registry, multiprocess_mode="max")
        self.build.labels(__version__).set(1)


# --- logging -------------------------------------------------------------------------------------


class Logger(Protocol):
    """The logging seam: an event name and keyword fields, one method per level.

    :func:`make_logger` returns one (a structlog bound logger); ``_logger`` is structlog's name for
    what it writes to, a :class:`LineWriter` that :func:`flush_logs` flushes at shutdown.
    """

    def debug(self, event: str, /, **fields: Any) -> Any: ...

    def info(self, event: str, /, **fields: Any) -> Any: ...

    def warning(self, event: str, /, **fields: Any) -> Any: ...

    def error(self, event: str, /, **fields: Any) -> Any: ...

    def exception(self, event: str, /, **fields: Any) -> Any: ...

    @property
    def _logger(self) -> object: ...


# Anything shaped like a JWS/JWE compact token, wherever it appears in a value.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_.-]*")
# Field names whose values are never logged, whatever they hold.
_SECRET_FIELDS = re.compile(
    r"(token|secret|password|verifier|code|cookie|authorization|nonce|state|assertion)", re.I
)
_SAFE_FIELDS = frozenset({"status", "status_code", "token_use", "reason", "error", "event", "grant"})
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def redact(value: Any) -> Any:
    """Mask token-shaped substrings in any logged value (strings, nested lists and dicts)."""
    if isinstance(value, str):
        return _JWT.sub("[redacted-jwt]", value) if "eyJ" in value else value
    if isinstance(value, dict):
        return {k: _redact_field(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def _redact_field(key: str, value: Any) -> Any:
    if key not in _SAFE_FIELDS and _SECRET_FIELDS.search(key) and value not in (None, "", True, False):
        return "[redacted]"
    return redact(value)


def redact_processor(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the last line of defence against a secret reaching a log line."""
    for key in list(event):
        event[key] = _redact_field(key, event[key])
    return event


class LineWriter:
    """structlog's logger: lines to ``stream``, optionally batched per 20 ms.

    Batched (the server's stdout), lines accumulate and go out in one ``write`` per batch, scheduled
    on the running event loop, instead of a write and a flush per line; :meth:`flush` at shutdown
    sends the rest. Unbatched (tests, the CLI before the loop runs) every line is written at once.
    """

    def __init__(self, stream: TextIO, *, batched: bool = False, delay: float = 0.02) -> None:
        self.stream = stream
        self.batched = batched
        self.delay = delay
        self._lines: list[str] = []
        self._scheduled = False

    def msg(self, message: str) -> None:
        self.write(message)

    # structlog calls the method named after the level; every level goes the same way.
    debug = info = warning = warn = error = critical = exception = msg

    def write(self, line: str) -> None:
        if not self.batched:
            self.stream.write(line + "\n")
            self.stream.flush()
            return
        self._lines.append(line)
        if not self._scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._scheduled = True
            loop.call_later(self.delay, self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._lines:
            lines, self._lines = self._lines, []
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()


_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii


class AccessLog:
    """The one line per request, written without structlog's processor chain.

    structlog costs ~30 µs a line (timestamp, processors, renderer); this costs a few: the fields
    are fixed, so the line is one ``json.dumps`` of a small dict, and no field can hold a secret
    (the request id is validated, the method and request id are still passed through
    :func:`redact` in case a client put a token there). Same JSON shape as the other lines.
    """

    def __init__(self, log: Logger, enabled: bool) -> None:
        writer = log._logger
        level = getattr(log, "_access_level", logging.INFO)
        self.enabled = enabled and level <= logging.INFO
        self._log = log
        self._writer = writer if isinstance(writer, LineWriter) and getattr(log, "_json", False) else None
        self._second = -1
        self._stamp = ""

    def __call__(self, method: str, route: str, status: int, duration_ms: float,
                 upstream_ms: float | None, sub: str | None, request_id: str) -> None:
        if not self.enabled:
            return
        if "eyJ" in method or "eyJ" in request_id:
            method, request_id = redact(method), redact(request_id)
        if self._writer is None:
            self._log.info("request", method=method, route=route, status=status, duration_ms=duration_ms,
                           upstream_ms=upstream_ms, sub=sub, request_id=request_id)
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        # Byte for byte what json.dumps() makes of these fields, at a third of its cost: strings
        # through the C string encoder, numbers as their repr (JSON's, for finite floats).
        q = _quote
        upstream = "null" if upstream_ms is None else repr(upstream_ms)
        who = "null" if sub is None else q(sub)
        self._writer.write(
            f'{{"method": {q(method)}, "route": {q(route)}, "status": {status:d}, '
            f'"duration_ms": {duration_ms!r}, "upstream_ms": {upstream}, "sub": {who}, '
            f'"request_id": {q(request_id)}, "event": "request", "level": "info", '
            f'"ts": "{self._stamp}.{int((now - second) * 1e6):06d}Z"}}'
        )


def flush_logs(log: Logger) -> None:
    """Send what a batched logger still holds (at shutdown)."""
    writer = log._logger
    if isinstance(writer, LineWriter):
        writer.flush()


# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a field.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


# aiohttp's access log prints each request line, query included: the callback's `code`, the
# authorize URL's `state` and `nonce`. The sidecar writes its own access line instead and runs its
# listeners without aiohttp's, so a record of this logger is another server's (the dev provider's in
# `authsidecar dev`) or a misconfiguration: it never joins the sidecar's stream.
_AIOHTTP_ACCESS = "aiohttp.access"


class _StdlibBridge(logging.Handler):
    """A ``logging`` handler that hands each record to a structlog :class:`Logger`.

    The line then takes the same way as every other: level filter, timestamp, traceback rendering,
    :func:`redact_processor`, the renderer, the same (batched) :class:`LineWriter`. The event is the
    record's message, ``logger`` its logger's name, ``extra=`` fields become fields. Records of
    ``aiohttp.access`` are dropped (see :data:`_AIOHTTP_ACCESS`).
    """

    def __init__(self, log: Logger) -> None:
        super().__init__()
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == _AIOHTTP_ACCESS:
            return
        try:
            fields = {k: v for k, v in record.__dict__.items()
                      if k not in _RECORD_ATTRS and not k.startswith("_")}
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            fields.pop("event", None)
            fields["logger"] = record.name
            level, log = record.levelno, self._log
            method = (log.error if level >= logging.ERROR else log.warning if level >= logging.WARNING
                      else log.info if level >= logging.INFO else log.debug)
            method(record.getMessage(), **fields)
        except Exception:
            self.handleError(record)


def route_stdlib_logging(log: Logger) -> Callable[[], None]:
    """Send the standard library's log records (aiohttp, aiohttp-session, ...) through ``log``.

    Without this, ``logging`` prints them as plain text on stderr, beside the JSON lines. The
    handler sits on the root logger; the returned callable takes it off again. Records are made
    only at the ``logging`` levels in force (by default warning and above); ``log`` applies the
    configured level on top.
    """
    handler = _StdlibBridge(log)
    root = logging.getLogger()
    root.addHandler(handler)
    return lambda: root.removeHandler(handler)


def make_logger(
    level: str = "info", fmt: str = "json", stream: TextIO | None = None, *, batched: bool = False
) -> Logger:
    """A structlog logger writing one line per event to ``stream`` (stdout by default).

    No global structlog configuration is touched: each app gets its own logger, so tests can
    capture one app's output without interference.
    """
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.format_exc_info,
        redact_processor,
        renderer,
    ]
    logger: Logger = structlog.wrap_logger(
        LineWriter(stream or sys.stdout, batched=batched),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
    )
    # What the access log's fast path needs to know about this logger.
    object.__setattr__(logger, "_access_level", _LEVELS[level])
    object.__setattr__(logger, "_json", fmt == "json")
    return logger


# The app's logger, for what serves the app (the listeners route library log lines through it).
LOGGER = web.AppKey("authsidecar.logger", Logger)
