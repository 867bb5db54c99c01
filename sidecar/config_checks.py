"""The schema's checks (part of :mod:`sidecar.config`): value checks the fields share, the rules that
relate several keys, and the start-up warnings.

Each rule names the dotted keys it reads. :class:`~sidecar.config.Settings` runs every rule once all
fields are valid; when some field is not, :mod:`sidecar.config_load` validates again with the broken
keys replaced by stand-ins and passes their names, and the rules reading any of them are skipped: a
file with a bad field *and* a broken cross-key rule shows both problems in one round, and no rule
speaks about a stand-in. A problem is ``(dotted key, message)``; the message says the fix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from sidecar.origin import origin_of

if TYPE_CHECKING:
    from sidecar.config import Settings

HOST_PREFIX = "__Host-"
SECURE_PREFIX = "__Secure-"


# -- values ---------------------------------------------------------------------------------------------


def check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an absolute http(s) URL, got {value!r}")
    if origin_of(value) is None:
        raise ValueError(f"{value!r} is not a URL the sidecar can use: {_origin_hint(value)}")
    return value


def _origin_hint(value: str) -> str:
    if not value.isascii():
        return "write an internationalized host in punycode, like https://xn--bcher-kva.example"
    return "no userinfo, no spaces or characters outside RFC 3986, a port from 1 to 65535"


def check_origin(origin: str) -> str:
    """The normalized origin (lower-case, default port dropped), or ValueError."""
    parts = urlsplit(origin)
    normalized = origin_of(origin)
    if normalized is None or parts.path not in ("", "/") or parts.query or parts.fragment:
        hint = f"; {_origin_hint(origin)}" if parts.scheme in ("http", "https") and parts.hostname else ""
        raise ValueError(f"{origin!r} is not an origin like https://app.example.com{hint}")
    return normalized


def each(values: tuple[str, ...], check: Callable[[str], str]) -> tuple[str, ...]:
    """``check`` applied to every entry; one "index: problem" part per bad entry."""
    out, problems = [], []
    for index, value in enumerate(values):
        try:
            out.append(check(value))
        except ValueError as exc:
            problems.append(f"{index}: {exc}")
    if problems:
        raise ValueError(" | ".join(problems))
    return tuple(out)


def absolute_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"{path!r} must start with '/'")
    return path


def safe_path(path: str) -> bool:
    """One leading ``/``, no backslash or control character, also once percent-decoded (as return_to)."""
    decoded = unquote(path)
    return decoded.startswith("/") and decoded[1:2] != "/" and not re.search(r"[\x00-\x1f\x7f\\]", decoded)



# -- rules that relate several keys -----------------------------------------------------------------

Problem = tuple[str, str]
_Rule = Callable[["Settings"], Iterator[Problem]]
_RULES: list[tuple[tuple[str, ...], _Rule]] = []


def _reads(*keys: str) -> Callable[[_Rule], _Rule]:
    def register(rule: _Rule) -> _Rule:
        _RULES.append((keys, rule))
        return rule

    return register


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def cross_key_problems(settings: Settings, failed: Collection[str] = ()) -> list[Problem]:
    """Every rule's problems, skipping the rules that read a key listed in ``failed``."""
    problems: list[Problem] = []
    for keys, rule in _RULES:
        if not any(_overlaps(key, bad) for key in keys for bad in failed):
            problems.extend(rule(settings))
    return problems


@_reads("listen.tls_cert", "listen.tls_key")
def _tls_pair(s: Settings) -> Iterator[Problem]:
    if (s.listen.tls_cert is None) != (s.listen.tls_key is None):
        missing = "listen.tls_key" if s.listen.tls_key is None else "listen.tls_cert"
        yield missing, "required when the other of listen.tls_cert / listen.tls_key is set"


@_reads("cookies.same_site", "cookies.secure")
def _same_site_none(s: Settings) -> Iterator[Problem]:
    if s.cookies.same_site == "none" and not s.cookies.secure:
        yield "cookies.same_site", "none requires secure: true (browsers drop such cookies)"


@_reads("cookies.host_prefix", "cookies.secure", "cookies.domain")
def _host_prefix(s: Settings) -> Iterator[Problem]:
    # RFC 6265bis §4.1.3.2: a __Host- cookie is Secure, has no Domain and Path=/; browsers drop others.
    if s.cookies.host_prefix and not s.cookies.secure:
        yield "cookies.host_prefix", "requires cookies.secure: true (__Host- cookies must be Secure)"
    if s.cookies.host_prefix and s.cookies.domain:
        yield "cookies.host_prefix", "cannot be combined with cookies.domain (__Host- forbids a Domain)"


@_reads("sessions.mode", "store.backend")
def _server_sessions_need_redis(s: Settings) -> Iterator[Problem]:
    if s.sessions.mode == "server" and s.store.backend != "redis":
        yield "sessions.mode", "server needs store.backend: redis (every replica must see each session)"


def xsrf_cookie_name(s: Settings) -> str:
    """The XSRF cookie's name as the cookie policy builds it (``__Host-`` added with host_prefix)."""
    name = s.csrf.cookie
    if s.cookies.host_prefix and not name.startswith((HOST_PREFIX, SECURE_PREFIX)):
        return HOST_PREFIX + name
    return name


@_reads("cookies.host_prefix", "cookies.secure", "cookies.domain", "csrf.cookie", "csrf.cookie_domain")
def _xsrf_cookie(s: Settings) -> Iterator[Problem]:
    name = xsrf_cookie_name(s)
    if name.startswith(HOST_PREFIX) and s.csrf.cookie_domain:
        yield ("csrf.cookie_domain",
               f"cannot be set: the XSRF cookie is named {name!r} and __Host- forbids a Domain "
               "(drop csrf.cookie_domain, or cookies.host_prefix / the __Host- name)")
    elif name.startswith(HOST_PREFIX) and s.cookies.domain and not s.cookies.host_prefix:
        yield "csrf.cookie", f"{name!r}: __Host- forbids a Domain and cookies.domain is set; use another name"
    if name.startswith((HOST_PREFIX, SECURE_PREFIX)) and not s.cookies.secure and not s.cookies.host_prefix:
        yield "csrf.cookie", f"{name!r} needs cookies.secure: true (browsers drop such a cookie without it)"


@_reads("dev_mode", "oidc.issuer")
def _https_issuer(s: Settings) -> Iterator[Problem]:
    if not s.dev_mode and s.oidc.issuer.startswith("http://"):
        yield "oidc.issuer", "must be https outside dev_mode"


@_reads("dev_mode", "cookies.secure")
def _secure_cookies(s: Settings) -> Iterator[Problem]:
    if not s.dev_mode and not s.cookies.secure:
        yield "cookies.secure", "must be true outside dev_mode"


@_reads("dev_mode", "cookies.secret")
def _secret(s: Settings) -> Iterator[Problem]:
    if not s.dev_mode and s.cookies.secret is None:
        yield "cookies.secret", "required (set AUTHSIDECAR_COOKIES__SECRET_FILE)"


@_reads("dev_mode", "oidc.issuer", "oidc.provider", "oidc.cognito_domain")
def _cognito_domain(s: Settings) -> Iterator[Problem]:
    if s.oidc.is_cognito and not s.oidc.cognito_domain and not s.dev_mode:
        yield "oidc.cognito_domain", "required for a Cognito issuer (the Hosted UI domain)"


# Cognito authorizes GlobalSignOut with the user's access token and refuses it (NotAuthorizedException)
# unless that token carries this scope; without it every logout's GlobalSignOut would fail silently.
COGNITO_ADMIN_SCOPE = "aws.cognito.signin.user.admin"


@_reads("oidc.global_sign_out", "oidc.scopes")
def _global_sign_out_scope(s: Settings) -> Iterator[Problem]:
    if s.oidc.global_sign_out and COGNITO_ADMIN_SCOPE not in s.oidc.scopes:
        yield ("oidc.global_sign_out",
               f"true needs {COGNITO_ADMIN_SCOPE!r} in oidc.scopes (Cognito refuses GlobalSignOut for an "
               "access token without it); add it there and to the app client's allowed scopes")


@_reads("logout.redirect_url", "app_url", "allowed_return_origins")
def _logout_redirect(s: Settings) -> Iterator[Problem]:
    url = s.logout.redirect_url
    if url is not None and origin_of(url) not in {origin_of(s.app_url), *s.allowed_return_origins}:
        yield ("logout.redirect_url",
               f"{url!r} is not on app_url's origin; add its origin to allowed_return_origins")


# -- start-up warnings --------------------------------------------------------------------------------


def config_warnings(settings: Settings) -> list[str]:
    """Accepted but probably not meant: one line each, naming the key and the fix."""
    patterns = [(f"public_paths.{i}", p) for i, p in enumerate(settings.public_paths)]
    patterns += [(f"csrf.exempt_paths.{i}", p) for i, p in enumerate(settings.csrf.exempt_paths)]
    patterns += [(f"rules.{i}.path", r.path) for i, r in enumerate(settings.rules)]
    return [
        f"{key}: {pattern!r} matches only that exact path; write {pattern + '**'!r} for everything under it"
        for key, pattern in patterns
        if pattern != "/" and pattern.endswith("/") and "*" not in pattern
    ]
