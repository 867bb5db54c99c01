"""Metrics and structured logging.

Every metric lives on a :class:`Metrics` object built on an injected ``CollectorRegistry`` (tests get
a fresh one; nothing is registered at import time). Label values are fixed, low-cardinality
identifiers: never a user, a path or a token.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
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
        self.provider_errors = Counter(
            p + "provider_errors_total", "Failed calls to the OpenID provider, by endpoint.",
            ["endpoint"], registry=registry,
        )
        # A gauge rather than an Info: Info is not supported in multiprocess mode.
        self.build = Gauge(p + "build_info", "Build information (always 1).", ["version"],
                           registry=registry, multiprocess_mode="max")
        self.build.labels(__version__).set(1)


# --- logging -------------------------------------------------------------------------------------

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


def make_logger(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> Any:
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
    return structlog.wrap_logger(
        structlog.PrintLogger(stream or sys.stdout),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        cache_logger_on_first_use=True,
    )
