"""Provider metadata: the one place that knows Amazon Cognito from generic OpenID Connect.

Cognito's endpoints follow from settings alone (the Hosted UI domain and the user pool issuer), so
:func:`cognito_metadata` does no I/O. A generic provider publishes them in its discovery document
(OpenID Connect Discovery 1.0), fetched once at start-up by :func:`discover`. Everything downstream
reads :class:`ProviderMetadata` and the URL builders here; no handler asks which kind it talks to.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import aiohttp

from sidecar.config import COGNITO_ISSUER, OidcSettings
from sidecar.errors import ProviderError

ProviderKind = Literal["cognito", "oidc"]

# A discovery document or token response is a few KiB; refuse to buffer an endless body.
MAX_BODY = 1024 * 1024
# Parameters authorize_url sets itself; ``extra`` may not override them.
_AUTHORIZE_PARAMS = frozenset({
    "response_type", "client_id", "redirect_uri", "scope", "state", "nonce",
    "code_challenge", "code_challenge_method",
})


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """Endpoints of the provider. ``issuer`` is the provider's exact issuer identifier."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    kind: ProviderKind
    revocation_endpoint: str | None = None
    end_session_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    # Cognito only: the Hosted UI /logout, the GlobalSignOut API endpoint and the pool's region.
    logout_endpoint: str | None = None
    global_sign_out_endpoint: str | None = None
    region: str | None = None


async def read_limited(response: aiohttp.ClientResponse, limit: int = MAX_BODY) -> bytes:
    """The response body, or :class:`ValueError` once it grows past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ValueError(f"response body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def cognito_metadata(oidc: OidcSettings) -> ProviderMetadata:
    """Cognito endpoints from the Hosted UI domain; no network.

    ``cognito_domain`` is a bare host (``auth.example.com`` → ``https://auth.example.com``) or a full
    URL (``http://127.0.0.1:5555`` for the local dev provider). For a real ``cognito-idp`` issuer the
    GlobalSignOut API lives at ``https://cognito-idp.{region}.amazonaws.com/``; for any other issuer
    (the dev provider) it is ``{issuer}/``.
    """
    domain = (oidc.cognito_domain or "").strip()
    if not domain:
        raise ProviderError("discovery", "oidc.cognito_domain is not set: Cognito needs its Hosted UI domain")
    base = (domain if "://" in domain else f"https://{domain}").rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProviderError("discovery", f"oidc.cognito_domain {domain!r} is not a host or an http(s) URL")
    match = COGNITO_ISSUER.match(oidc.issuer)
    region = match[1] if match else None
    sign_out = f"https://cognito-idp.{region}.amazonaws.com/" if region else f"{oidc.issuer}/"
    return ProviderMetadata(
        issuer=oidc.issuer,
        authorization_endpoint=f"{base}/oauth2/authorize",
        token_endpoint=f"{base}/oauth2/token",
        jwks_uri=f"{oidc.issuer}/.well-known/jwks.json",
        kind="cognito",
        revocation_endpoint=f"{base}/oauth2/revoke",
        userinfo_endpoint=f"{base}/oauth2/userInfo",
        logout_endpoint=f"{base}/logout",
        global_sign_out_endpoint=sign_out,
        region=region,
    )


def parse_discovery(document: Any, issuer: str) -> ProviderMetadata:
    """Validate a discovery document for the configured ``issuer``; :class:`ProviderError` if unusable."""
    if not isinstance(document, dict):
        raise ProviderError("discovery", "the discovery document is not a JSON object")
    found = document.get("issuer")
    # Discovery §4.3: identical to the configured issuer. Settings drop a trailing "/" from the
    # configured value, so that one character is the only difference tolerated; the provider's exact
    # spelling is kept, since ID and access tokens carry it in `iss`.
    if not isinstance(found, str) or found not in (issuer, issuer + "/"):
        raise ProviderError("discovery", f"issuer {found!r} in the discovery document is not {issuer!r}")
    need_https = urlsplit(issuer).scheme == "https"
    methods = document.get("code_challenge_methods_supported")
    if methods is not None and (not isinstance(methods, list) or "S256" not in methods):
        raise ProviderError("discovery", "the provider does not support PKCE with S256")
    return ProviderMetadata(
        issuer=found,
        authorization_endpoint=_required(document, "authorization_endpoint", need_https),
        token_endpoint=_required(document, "token_endpoint", need_https),
        jwks_uri=_required(document, "jwks_uri", need_https),
        kind="oidc",
        revocation_endpoint=_optional(document, "revocation_endpoint", need_https),
        end_session_endpoint=_optional(document, "end_session_endpoint", need_https),
        userinfo_endpoint=_optional(document, "userinfo_endpoint", need_https),
    )


def _optional(document: Mapping[str, Any], key: str, need_https: bool) -> str | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProviderError("discovery", f"{key} {value!r} is not a URL")
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProviderError("discovery", f"{key} {value!r} is not an absolute URL")
    if need_https and parts.scheme != "https":
        raise ProviderError("discovery", f"{key} {value!r} is not https like the issuer")
    return value


def _required(document: Mapping[str, Any], key: str, need_https: bool) -> str:
    value = _optional(document, key, need_https)
    if value is None:
        raise ProviderError("discovery", f"{key} is missing from the discovery document")
    return value


async def discover(
    session: aiohttp.ClientSession,
    oidc: OidcSettings,
    timeout: float,  # noqa: ASYNC109 - handed to aiohttp.ClientTimeout, aiohttp's own per-request limit
) -> ProviderMetadata:
    """Metadata for the configured provider: derived for Cognito, fetched for generic OIDC."""
    if oidc.is_cognito:
        return cognito_metadata(oidc)
    url = f"{oidc.issuer}/.well-known/openid-configuration"
    try:
        async with session.get(
            url, headers={"Accept": "application/json"}, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            if response.status != 200:
                raise ProviderError("discovery", f"GET {url}: HTTP {response.status}")
            body = await read_limited(response)
    except TimeoutError:
        raise ProviderError("discovery", f"GET {url}: no answer within {timeout}s") from None
    except aiohttp.ClientError as exc:
        raise ProviderError("discovery", f"GET {url}: {type(exc).__name__}: {exc}") from None
    except ValueError as exc:
        raise ProviderError("discovery", f"GET {url}: {exc}") from None
    try:
        document = json.loads(body)
    except ValueError:
        raise ProviderError("discovery", f"GET {url}: the answer is not JSON") from None
    return parse_discovery(document, oidc.issuer)


def _with_query(url: str, params: list[tuple[str, str]]) -> str:
    """``url`` with ``params`` appended to whatever query it already has."""
    parts = urlsplit(url)
    encoded = urlencode(params, quote_via=quote)
    query = f"{parts.query}&{encoded}" if parts.query else encoded
    return urlunsplit(parts._replace(query=query))


def authorize_url(
    meta: ProviderMetadata,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: tuple[str, ...] | list[str],
    state: str,
    nonce: str,
    code_challenge: str,
    extra: Mapping[str, str],
) -> str:
    """The authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3, OpenID Connect Core §3.1.2.1)."""
    clash = sorted(_AUTHORIZE_PARAMS.intersection(extra))
    if clash:
        raise ValueError(f"extra authorize parameters may not override {clash}")
    params = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", " ".join(scopes)),
        ("state", state),
        ("nonce", nonce),
        ("code_challenge", code_challenge),
        ("code_challenge_method", "S256"),
        *extra.items(),
    ]
    return _with_query(meta.authorization_endpoint, params)


def logout_redirect(
    meta: ProviderMetadata, *, client_id: str, post_logout_uri: str, id_token_hint: str | None
) -> str | None:
    """Where to send the browser to end the provider's session; None when the provider has no logout.

    Cognito: ``/logout?client_id=…&logout_uri=…`` (the URI must be a registered sign-out URL).
    OIDC: RP-Initiated Logout 1.0 §2 at ``end_session_endpoint``.
    """
    if meta.kind == "cognito":
        if meta.logout_endpoint is None:
            return None
        return _with_query(meta.logout_endpoint, [("client_id", client_id), ("logout_uri", post_logout_uri)])
    if meta.end_session_endpoint is None:
        return None
    params = [("id_token_hint", id_token_hint)] if id_token_hint else []
    params += [("post_logout_redirect_uri", post_logout_uri), ("client_id", client_id)]
    return _with_query(meta.end_session_endpoint, params)
