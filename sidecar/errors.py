"""The exception tree. Every rejection is a typed value with a reason; HTTP mapping lives in one place.

    SidecarError
    ├── ConfigError(messages)            bad configuration: one line per problem, each naming its key
    ├── AuthRejected(reason)             the request is not allowed through
    │   ├── TokenRejected                401: missing / malformed / expired / bad signature / ...
    │   ├── CsrfRejected                 403: double-submit token or Origin check failed
    │   ├── Forbidden                    403: an authorization rule refused the identity
    │   ├── AmbiguousPath                400: a dot segment the app might resolve unlike the rules
    │   ├── BadOriginalRequest           400: a gateway's original method/URI that cannot be judged
    │   ├── FlowRejected                 400: a broken login transaction (state, replay, ...)
    │   └── LogoutTokenRejected          400: a back-channel logout token that fails a check
    ├── ProviderError(reason)            502/503: the OpenID provider failed or is unreachable
    │   └── RefreshFailed                401: the provider refused the refresh token (invalid_grant)
    └── UpstreamError(kind)              502 (refused, reset) / 504 (timeout): the app failed

``reason`` and ``kind`` are short, fixed, low-cardinality strings: they become metric labels and
log fields, and are safe to show a client. No exception in this tree carries a token or a secret.
"""

from __future__ import annotations

from collections.abc import Sequence


class SidecarError(Exception):
    """Base of every error raised on purpose by authsidecar."""


class ConfigError(SidecarError):
    """The configuration cannot be used. ``messages`` holds one line per problem, each naming its key."""

    def __init__(self, messages: Sequence[str]) -> None:
        self.messages = tuple(messages)
        super().__init__("; ".join(self.messages))


class AuthRejected(SidecarError):
    """The request is refused. ``reason`` is a fixed identifier safe for labels, logs and bodies."""

    status = 401
    error = "unauthorized"

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class TokenRejected(AuthRejected):
    """No usable access token: missing, malformed, expired, forged, or meant for someone else."""


class CsrfRejected(AuthRejected):
    """An unsafe request with cookie credentials failed the CSRF checks."""

    status = 403
    error = "csrf_failed"


class Forbidden(AuthRejected):
    """A valid identity that an authorization rule does not allow."""

    status = 403
    error = "forbidden"


class AmbiguousPath(AuthRejected):
    """A path with a ``.``/``..`` segment: the app might resolve it differently from the rules."""

    status = 400
    error = "bad_request"


class BadOriginalRequest(AuthRejected):
    """Forward-auth: the gateway's ``X-Original-URI``/``-Method`` is not a plain path and method."""

    status = 400
    error = "bad_request"


class FlowRejected(AuthRejected):
    """The browser login flow cannot continue (bad state, replayed callback, missing transaction)."""

    status = 400
    error = "bad_request"


class LogoutTokenRejected(AuthRejected):
    """OIDC Back-Channel Logout 1.0 §2.8: a logout request that fails validation is a 400."""

    status = 400
    error = "invalid_request"


class ProviderError(SidecarError):
    """The OpenID provider answered badly or not at all."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class RefreshFailed(ProviderError):
    """The provider refused the refresh token (RFC 6749 §5.2 ``invalid_grant``): the session is over."""


class UpstreamError(SidecarError):
    """The application container failed: ``kind`` is ``refused``, ``reset`` or ``timeout``."""

    def __init__(self, kind: str, detail: str = "") -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}" if detail else kind)

    @property
    def status(self) -> int:
        return 504 if self.kind == "timeout" else 502
