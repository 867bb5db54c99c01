"""Settings: one YAML file, then ``AUTHSIDECAR_*`` environment overrides, then ``*_file`` secrets.

``load_settings`` is the only reader of configuration files, secret files and the environment. It
returns a frozen :class:`Settings` or raises :class:`~sidecar.errors.ConfigError` listing every
problem, each naming its dotted key. Unknown keys are refused so that a typo never silently turns
into a default.

Environment overrides: ``AUTHSIDECAR_`` + the dotted key upper-cased with ``__`` between levels, e.g.
``AUTHSIDECAR_OIDC__CLIENT_ID`` sets ``oidc.client_id``. Values are read as YAML scalars or flow
collections (``true``, ``42``, ``[admins, ops]``). Any key ``X`` also accepts ``X_file``: the path of a
file whose contents (trailing newline stripped) become the value, for Kubernetes Secrets mounted as
files, e.g. ``AUTHSIDECAR_OIDC__CLIENT_SECRET_FILE=/var/run/secrets/oidc/client-secret``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from sidecar.errors import ConfigError

ENV_PREFIX = "AUTHSIDECAR_"
COGNITO_ISSUER = re.compile(r"^https://cognito-idp\.([a-z0-9-]+)\.amazonaws\.com/([\w-]+_[0-9A-Za-z]+)$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
IDENTITY_PREFIXES = ("x-user-", "x-auth-request-")


class Section(BaseModel):
    """Frozen, closed model; ``KEY_file`` loads any key's value from a file."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _read_files(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        for key in list(out):
            if not (isinstance(key, str) and key.endswith("_file")):
                continue
            base = key[: -len("_file")]
            if base not in cls.model_fields or key in cls.model_fields:
                continue
            path = out.pop(key)
            try:
                out[base] = Path(str(path)).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"{key}: cannot read {path}: {exc.strerror}") from None
        return out


def _check_url(value: str, *, name: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an absolute http(s) URL, got {value!r}")
    return value


class ListenSettings(Section):
    host: str = "0.0.0.0"  # noqa: S104 - a sidecar listens on the pod network by design
    port: int = Field(8080, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Seconds in-flight requests (and websockets) get to finish after SIGTERM.
    shutdown_grace: float = Field(20.0, ge=0)

    @model_validator(mode="after")
    def _tls_pair(self) -> ListenSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        return self


class AdminSettings(Section):
    host: str = "0.0.0.0"  # noqa: S104 - probes and scrapes come from the kubelet / Prometheus
    port: int = Field(9464, ge=0, le=65535)


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
        return _check_url(v, name="url").rstrip("/")


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
        return _check_url(v, name="issuer").rstrip("/")

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

    @field_validator("secret")
    @classmethod
    def _secret_len(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (e.g. `openssl rand -base64 48`)")
        return v

    @model_validator(mode="after")
    def _attrs(self) -> CookieSettings:
        if self.same_site == "none" and not self.secure:
            raise ValueError("same_site: none requires secure: true (browsers drop such cookies)")
        if self.host_prefix and (not self.secure or self.domain):
            raise ValueError("host_prefix requires secure: true and no domain")
        return self


class CorsSettings(Section):
    allowed_origins: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ("Content-Type", "X-XSRF-TOKEN")
    allow_methods: tuple[str, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    max_age: int = Field(600, ge=0)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for origin in v:
            if origin == "*":
                raise ValueError("'*' cannot be combined with credentials; list exact origins")
            _check_origin(origin)
        return tuple(o.rstrip("/").lower() for o in v)


class CsrfSettings(Section):
    header: str = "X-XSRF-TOKEN"
    cookie: str = "XSRF-TOKEN"
    # Domain of the XSRF-TOKEN cookie alone (default: cookies.domain). With an SPA on app.example.com
    # and the sidecar on api.example.com, set "example.com" here so the SPA's JavaScript can read the
    # CSRF token, while the token cookies stay host-only on the sidecar's host.
    cookie_domain: str | None = None
    exempt_paths: tuple[str, ...] = ()


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


class LogoutSettings(Section):
    # Where the browser lands after logout (default: app_url); an origin of app_url or
    # allowed_return_origins, like return_to.
    redirect_url: str | None = None


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"
    # One line per request (method, route class, status, durations, sub, request id).
    access_log: bool = True


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
    logout: LogoutSettings = LogoutSettings()
    logging: LoggingSettings = LoggingSettings()
    # Processes sharing the ports (SO_REUSEPORT); `serve --workers N` overrides.
    workers: int = Field(1, ge=1, le=64)
    # Development only: allows an http:// issuer and non-Secure cookies.
    dev_mode: bool = False

    @field_validator("callback_url", "app_url")
    @classmethod
    def _urls(cls, v: str) -> str:
        return _check_url(v, name="URL")

    @field_validator("allowed_return_origins")
    @classmethod
    def _ret_origins(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for origin in v:
            _check_origin(origin)
        return tuple(o.rstrip("/").lower() for o in v)

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
        for p in v:
            if not p.startswith("/"):
                raise ValueError(f"{p!r} must start with '/'")
        return v

    @model_validator(mode="after")
    def _cross(self) -> Settings:
        problems: list[tuple[str, str]] = []
        if not self.dev_mode:
            if self.oidc.issuer.startswith("http://"):
                problems.append(("oidc.issuer", "must be https outside dev_mode"))
            if not self.cookies.secure:
                problems.append(("cookies.secure", "must be true outside dev_mode"))
            if self.cookies.secret is None:
                problems.append(("cookies.secret", "required (set AUTHSIDECAR_COOKIES__SECRET_FILE)"))
        if self.oidc.is_cognito and not self.oidc.cognito_domain and not self.dev_mode:
            problems.append(("oidc.cognito_domain", "required for a Cognito issuer (the Hosted UI domain)"))
        if problems:
            raise ValueError(" | ".join(f"{k}: {m}" for k, m in problems))
        return self


def _check_origin(origin: str) -> None:
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"{origin!r} is not an origin like https://app.example.com")


_VERBATIM = frozenset({"client_id", "client_secret", "secret"})


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            raise ConfigError([f"{name}: empty key segment (use __ between levels)"])
        if path[-1] in _VERBATIM:
            # Ids and secrets are taken as written: read as YAML, "12345" would be a number, a
            # secret starting with "#" or "&" would be null and "abc #def" would lose " #def".
            value: Any = raw
        else:
            try:
                value = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError:
                value = raw
        node = tree
        for key in path[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError([f"{name}: conflicts with another override"])
            node = child
        node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _messages(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        kind = item["type"]
        if kind == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        elif kind == "missing":
            lines.append(f"{key}: required key is missing")
        elif kind == "value_error":
            # Validators name a sub-key as "name: problem"; several problems are joined by " | ".
            for part in str(item["msg"]).removeprefix("Value error, ").split(" | "):
                keyed = _KEYED.match(part) is not None
                lines.append(f"{key}.{part}" if key and keyed else part if keyed else f"{key}: {part}")
        else:
            lines.append(f"{key}: {item['msg']}")
    return lines


_KEYED = re.compile(r"^[a-z_][a-z0-9_.]*: ")


def parse_settings(data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Validate an already-parsed mapping (plus optional environment overrides)."""
    merged = _merge(dict(data), _env_overrides(environ or {}))
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_messages(exc)) from None


def load_settings(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Settings:
    """Read the YAML file (if any), apply ``AUTHSIDECAR_*`` overrides and validate."""
    data: Any = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"config file {path}: {exc.strerror}"]) from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "invalid YAML"
            raise ConfigError([f"config file {path}:{where}: {problem}"]) from None
        if not isinstance(data, dict):
            raise ConfigError([f"config file {path}: top level must be a mapping of keys"])
    return parse_settings(data, environ)


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, secrets masked (for ``check-config``)."""
    return settings.model_dump(mode="json")
