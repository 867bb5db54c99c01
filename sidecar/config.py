"""The settings schema: every check on the configuration lives here, so ``check-config`` == ``serve``.

Frozen, closed models (unknown keys are refused, so a typo never silently turns into a default).
Field checks sit on the fields; rules relating several keys are :mod:`sidecar.config_checks`, each
naming the keys it reads, so a file with a broken field still gets every other rule checked in the
same round (see :mod:`sidecar.config_load`). A value this schema accepts never makes a constructor
at start-up raise. Pure: no files, no environment; reading those is :mod:`sidecar.config_load`'s job.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sidecar.config_checks import absolute_path, check_origin, check_url, cross_key_problems, each, safe_path
from sidecar.config_checks import config_warnings as config_warnings
from sidecar.origin import URI_CHARS, origin_of

COGNITO_ISSUER = re.compile(r"^https://cognito-idp\.([a-z0-9-]+)\.amazonaws\.com/([\w-]+_[0-9A-Za-z]+)$")
# RFC 9110 §5.6.2 token: header names, and cookie names (RFC 6265 §4.1.1).
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
IDENTITY_PREFIXES = ("x-user-", "x-auth-request-")
# Parameters of the authorization request the sidecar sets itself (RFC 6749 §4.1.1, RFC 7636 §4.3,
# OpenID Connect Core §3.1.2.1): a passthrough parameter may not override them.
AUTHORIZE_PARAMS = frozenset({
    "response_type", "client_id", "redirect_uri", "scope", "state", "nonce",
    "code_challenge", "code_challenge_method",
})
# The sidecar's own routes; me_alias may not shadow them.
AUTH_ROUTES = frozenset({"/auth/login", "/auth/callback", "/auth/refresh", "/auth/logout", "/auth/me",
                         "/auth/backchannel-logout"})
# Validation context key: dotted keys that failed their own checks; cross-key rules reading them
# are skipped (their values here are stand-ins, see sidecar.config_load).
FAILED_KEYS = "failed_keys"


class AsWritten:
    """Marks a text key that takes any text from the environment, ``null`` and ``~`` included (a
    user name may be any text), like a secret; leave the variable out to leave it unset. Other
    optional text keys are unset by those words (see :mod:`sidecar.config_load`)."""


class Section(BaseModel):
    """Frozen and closed."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class ListenSettings(Section):
    host: str = "0.0.0.0"  # noqa: S104 - a sidecar listens on the pod network by design
    port: int = Field(8080, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Seconds in-flight requests (and websockets) get to finish after SIGTERM.
    shutdown_grace: float = Field(20.0, ge=0)


class AdminSettings(Section):
    host: str = "0.0.0.0"  # noqa: S104 - probes and scrapes come from the kubelet / Prometheus
    port: int = Field(9464, ge=0, le=65535)
    # Bearer secret of POST /admin/revoke (`revoke_token_file` for a mounted secret); without it
    # the route does not exist. 32+ characters.
    revoke_token: SecretStr | None = None
    # Who the audit line names for a call with that secret (one secret, one holder).
    revoke_label: str = Field("admin", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")

    @field_validator("revoke_token")
    @classmethod
    def _token_len(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and (len(v.get_secret_value()) < 32 or not v.get_secret_value().isascii()):
            raise ValueError("must be at least 32 ASCII characters (e.g. `openssl rand -base64 48`)")
        return v


class UpstreamSettings(Section):
    url: str = "http://127.0.0.1:3000"
    connect_timeout: float = Field(5.0, gt=0)
    # Longest silence while reading the app's response; a streaming response may run longer.
    read_timeout: float = Field(60.0, gt=0)
    max_connections: int = Field(512, ge=1)
    websocket_max_message: int = Field(4 * 1024 * 1024, ge=1024)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v).rstrip("/")


class OidcSettings(Section):
    issuer: str
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    # auto: Cognito rules for a cognito-idp issuer, generic OpenID Connect for any other.
    provider: Literal["auto", "cognito", "oidc"] = "auto"
    # Cognito Hosted UI domain (auth.example.com or mypool.auth.eu-west-1.amazoncognito.com).
    cognito_domain: str | None = None
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    # Generic OIDC: the `aud` an access token must carry (default: the client id).
    access_token_audience: str | None = None
    algorithms: tuple[str, ...] = ("RS256",)
    leeway: float = Field(60.0, ge=0, le=600)
    jwks_refresh_interval: float = Field(3600.0, ge=5)
    unknown_kid_cooldown: float = Field(60.0, ge=0)
    timeout: float = Field(5.0, gt=0)
    # Extra parameters a login request may pass through to the authorize endpoint.
    passthrough_params: tuple[str, ...] = ("identity_provider", "lang", "prompt", "login_hint")
    # Cognito only: also call GlobalSignOut at logout (invalidates every session of the user).
    global_sign_out: bool = False

    @field_validator("algorithms")
    @classmethod
    def _algs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
        bad = [a for a in v if a not in allowed]
        if bad or not v:
            raise ValueError(f"unsupported algorithm(s) {bad or v}; choose from {sorted(allowed)}")
        return v

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, v: str) -> str:
        return check_url(v).rstrip("/")

    @field_validator("passthrough_params")
    @classmethod
    def _passthrough(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        clash = sorted(AUTHORIZE_PARAMS.intersection(v))
        if clash:
            raise ValueError(f"{clash} are set by the sidecar itself; remove them")
        return v

    @property
    def is_cognito(self) -> bool:
        if self.provider == "auto":
            return COGNITO_ISSUER.match(self.issuer) is not None
        return self.provider == "cognito"


class CookieSettings(Section):
    secure: bool = True
    same_site: Literal["lax", "strict", "none"] = "lax"
    domain: str | None = None
    # Name cookies `__Host-…` (requires Secure, no Domain, Path=/ for the token cookies).
    host_prefix: bool = False
    # The refresh token only travels to /auth/* by default; set "/" to send it everywhere.
    refresh_token_path: str = "/auth"  # noqa: S105 - a cookie path, not a secret
    # Encrypts the login transaction and keys the CSRF HMAC. 32+ characters; share across replicas.
    secret: SecretStr | None = None
    access_token_max_age: int = Field(3600, ge=60)
    refresh_token_max_age: int = Field(30 * 24 * 3600, ge=60)
    transaction_max_age: int = Field(600, ge=30)
    # Token-cookie mode: a login whose cookies exceed this many bytes (names and values) logs a
    # warning pointing to server sessions. API Gateway refuses request heads over 10,240 bytes.
    max_header_bytes: int = Field(8192, ge=1024)

    @field_validator("secret")
    @classmethod
    def _secret_len(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (e.g. `openssl rand -base64 48`)")
        return v

    @field_validator("refresh_token_path")
    @classmethod
    def _path(cls, v: str) -> str:
        return absolute_path(v)


class CorsSettings(Section):
    allowed_origins: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ("Content-Type", "X-XSRF-TOKEN")
    allow_methods: tuple[str, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    max_age: int = Field(600, ge=0)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if "*" in v:
            raise ValueError("'*' cannot be combined with credentials; list exact origins")
        return each(v, check_origin)


class CsrfSettings(Section):
    header: str = "X-XSRF-TOKEN"
    cookie: str = "XSRF-TOKEN"
    # Domain of the XSRF-TOKEN cookie alone (default: cookies.domain). With an SPA on app.example.com
    # and the sidecar on api.example.com, set "example.com" here so the SPA's JavaScript can read the
    # CSRF token, while the token cookies stay host-only on the sidecar's host.
    cookie_domain: str | None = None
    exempt_paths: tuple[str, ...] = ()

    @field_validator("header", "cookie")
    @classmethod
    def _name(cls, v: str) -> str:
        if not HEADER_NAME.match(v):
            raise ValueError(f"{v!r} is not a valid name (letters, digits and !#$%&'*+.^_`|~-)")
        return v

    @field_validator("exempt_paths")
    @classmethod
    def _paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return each(v, absolute_path)


class AssertionSettings(Section):
    """A signed identity assertion (ES256 JWT) on every proxied request and every verify 200."""

    enabled: bool = False
    header: str = "X-Authsidecar-Assertion"
    # The app's audience: the `aud` it checks (e.g. "https://app.example.com" or "orders-api").
    audience: str | None = None
    # PEM EC P-256 private key that signs (`signing_key_file` for a mounted secret); share across replicas.
    signing_key: SecretStr | None = None
    # A second PEM EC P-256 key, published in the JWKS but never used to sign (key rotation).
    secondary_key: SecretStr | None = None
    # Seconds an assertion is valid (never past the access token's own expiry).
    lifetime: int = Field(60, ge=10, le=60)

    @field_validator("signing_key", "secondary_key")
    @classmethod
    def _pem(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not _is_p256_private_pem(v.get_secret_value()):
            raise ValueError("must be a PEM EC P-256 private key "
                             "(`openssl ecparam -name prime256v1 -genkey -noout`)")
        return v

    @model_validator(mode="after")
    def _complete(self) -> AssertionSettings:
        if not HEADER_NAME.match(self.header):
            raise ValueError(f"header: {self.header!r} is not a valid header name")
        if self.enabled and (not self.audience or self.signing_key is None):
            raise ValueError("enabled: needs audience and signing_key (or signing_key_file)")
        return self


def _is_p256_private_pem(text: str) -> bool:
    try:
        key = load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError):
        return False
    return isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)


class IdentityHeaderSettings(Section):
    user_id: str = "X-User-Id"
    email: str = "X-User-Email"
    groups: str = "X-User-Groups"
    username: str = "X-User-Name"
    # Extra claims to forward: claim name -> header name.
    claims: dict[str, str] = Field(default_factory=dict)
    # Further headers to strip from every client request (X-User-* and X-Auth-Request-* always are).
    strip: tuple[str, ...] = ()
    # Also send the raw access token upstream as `Authorization: Bearer` (off: the app never sees it).
    forward_access_token: bool = False
    assertion: AssertionSettings = AssertionSettings()

    @model_validator(mode="after")
    def _names(self) -> IdentityHeaderSettings:
        names = (self.user_id, self.email, self.groups, self.username, *self.claims.values(), *self.strip)
        for name in names:
            if not HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
        return self


class TokenSettings(Section):
    # Accept `Authorization: Bearer` from non-browser clients (CSRF does not apply to them).
    accept_bearer: bool = True
    validation_cache_size: int = Field(10000, ge=0)
    # The longest an access or ID token lives at the provider (Cognito allows up to a day): how
    # long a revoked session, user or sid stays on the deny-list.
    max_lifetime: int = Field(24 * 3600, ge=60, le=30 * 24 * 3600)


class Rule(Section):
    """First matching rule decides; paths use `*` (one segment) and `**` (any depth)."""

    path: str
    methods: tuple[str, ...] = ()
    groups_any: tuple[str, ...] = ()
    groups_all: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    claims: dict[str, str | tuple[str, ...]] = Field(default_factory=dict)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(m.upper() for m in v)

    @field_validator("claims", mode="before")
    @classmethod
    def _claims(cls, v: Any) -> Any:
        # One message per claim (the union type would report each of its members).
        if not isinstance(v, Mapping):
            return v
        out: dict[Any, Any] = {}
        problems = []
        for name, wanted in v.items():
            if isinstance(wanted, (list, tuple)) and wanted and all(isinstance(w, str) for w in wanted):
                out[name] = tuple(wanted)
            elif isinstance(wanted, str):
                out[name] = wanted
            else:
                problems.append(f"{name}: must be a string or a non-empty list of strings "
                                '(quote YAML booleans and numbers: "true", "42")')
        if problems:
            raise ValueError(" | ".join(problems))
        return out


class RedisSettings(Section):
    # redis://host:6379/0 or rediss:// (TLS); credentials go in username / password(_file).
    url: str
    username: Annotated[str | None, AsWritten()] = None
    password: SecretStr | None = None
    # Prepended to every key: several deployments can share one Redis without seeing each other.
    key_prefix: str = Field("authsidecar:", min_length=1, max_length=64)
    connect_timeout: float = Field(2.0, gt=0, le=30)
    command_timeout: float = Field(1.0, gt=0, le=30)
    pool_size: int = Field(32, ge=1, le=1024)
    # CA bundle for a rediss:// server whose certificate a private CA signed.
    tls_ca_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            # The value is not repeated: it may hold a password.
            raise ValueError("must be a redis:// or rediss:// URL with a host")
        if parts.password or parts.username:
            raise ValueError("put no credentials in the URL; use store.redis.username and password_file")
        return v


class SessionSettings(Section):
    # cookie: the tokens live in the browser's cookies (default, nothing on the server).
    # server: the browser holds one opaque session id; the tokens live sealed in Redis. For users
    # in many groups behind API Gateway (10,240 bytes of request line and headers at most).
    mode: Literal["cookie", "server"] = "cookie"
    # Seconds a process serves a server session from its own memory before asking Redis again
    # (a change on another replica reaches it sooner, by pub/sub).
    cache_seconds: float = Field(5.0, ge=0, le=5)


class StoreSettings(Section):
    # memory: one process (workers of one host share through the supervisor); redis: every replica.
    backend: Literal["memory", "redis"] = "memory"
    redis: RedisSettings | None = None

    @model_validator(mode="after")
    def _redis(self) -> StoreSettings:
        if self.backend == "redis" and self.redis is None:
            raise ValueError("redis: required when backend is redis (at least redis.url)")
        return self


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"
    # One line per request (method, route class, status, durations, sub, request id).
    access_log: bool = True


class LogoutSettings(Section):
    # Where the browser lands after /auth/logout (default: app_url). On app_url's origin or one of
    # allowed_return_origins; a page that does not itself require a login.
    redirect_url: str | None = None
    # OIDC Back-Channel Logout 1.0 at POST /auth/backchannel-logout (register that URL at the
    # provider; Cognito has none). A logout token older than backchannel_max_age seconds is refused.
    backchannel: bool = False
    backchannel_max_age: float = Field(300.0, gt=0, le=3600)

    @field_validator("redirect_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if origin_of(v) is None or not safe_path(parts.path or "/") or len(v) > 2048:
            raise ValueError(f"{v!r} is not an absolute http(s) URL like https://app.example.com/signed-out "
                             "(ASCII only, no userinfo)")
        return v


class Settings(Section):
    listen: ListenSettings = ListenSettings()
    admin: AdminSettings = AdminSettings()
    # null: no app behind the sidecar (forward-auth for a gateway): /auth/*, verify and admin only.
    upstream: UpstreamSettings | None = UpstreamSettings()
    oidc: OidcSettings
    # The public URL of /auth/callback as the browser reaches it (registered at the provider).
    callback_url: str
    # Where users land after login / logout when no valid return_to was given.
    app_url: str
    # Origins (besides app_url's) that return_to and post-logout redirects may point at.
    allowed_return_origins: tuple[str, ...] = ()
    cookies: CookieSettings = CookieSettings()
    cors: CorsSettings = CorsSettings()
    csrf: CsrfSettings = CsrfSettings()
    identity_headers: IdentityHeaderSettings = IdentityHeaderSettings()
    tokens: TokenSettings = TokenSettings()
    public_paths: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    # Peers whose X-Forwarded-* headers are believed (API Gateway / ALB / ingress addresses).
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # An alias of /auth/me served at this path as well (e.g. "/me"); empty for none.
    me_alias: str | None = None
    # What the processes and replicas share: refresh single-flight, spent login states.
    store: StoreSettings = StoreSettings()
    sessions: SessionSettings = SessionSettings()
    logging: LoggingSettings = LoggingSettings()
    # Processes sharing the ports (SO_REUSEPORT); `serve --workers N` overrides.
    workers: int = Field(1, ge=1, le=64)
    logout: LogoutSettings = LogoutSettings()
    # Development only: allows an http:// issuer and non-Secure cookies.
    dev_mode: bool = False

    @field_validator("callback_url", "app_url")
    @classmethod
    def _urls(cls, v: str) -> str:
        return check_url(v)

    @field_validator("allowed_return_origins")
    @classmethod
    def _ret_origins(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return each(v, check_origin)

    @field_validator("me_alias")
    @classmethod
    def _me_alias(cls, v: str | None) -> str | None:
        if not v:
            return None
        if not v.startswith("/") or "{" in v or "}" in v or not URI_CHARS.fullmatch(v):
            raise ValueError(f"{v!r} is not a plain path like /me")
        if v.rstrip("/") in AUTH_ROUTES or v.rstrip("/") == "/auth":
            raise ValueError(f"{v!r} is a route of the sidecar itself; pick another path like /me")
        return v

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, v: Any) -> Any:
        # One message per entry (the union type would report an IPv4 and an IPv6 failure).
        if not isinstance(v, (list, tuple)):
            return v
        out: list[Any] = []
        problems = []
        for item in v:
            if isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                out.append(item)
                continue
            problem = f"{item!r} is not an address or network like 10.0.0.0/8"
            if not isinstance(item, str):
                problems.append(problem)
                continue
            try:
                out.append(ipaddress.ip_network(item))
            except ValueError as exc:
                problems.append(f"{problem} ({exc})")
        if problems:
            raise ValueError(" | ".join(problems))
        return tuple(out)

    @field_validator("public_paths")
    @classmethod
    def _public(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return each(v, absolute_path)

    @model_validator(mode="after")
    def _cross(self, info: ValidationInfo) -> Settings:
        failed = (info.context or {}).get(FAILED_KEYS, frozenset())
        problems = cross_key_problems(self, failed)
        if problems:
            raise ValueError(" | ".join(f"{k}: {m}" for k, m in problems))
        return self
