"""Calls to the provider: token endpoint (code, refresh), revocation, Cognito GlobalSignOut.

Protocol and I/O are apart. Pure functions build each request (:class:`ProviderRequest`: URL,
headers, encoded body) and judge each answer (status + body → :class:`TokenSet` or an exception);
:class:`OidcClient` only sends, times and counts. Failures are :class:`~sidecar.errors.ProviderError`
with a fixed reason (``token_http_500``, ``token_timeout``, ``revocation_unreachable``,
``global_sign_out_invalid_response``, …) whose detail is at most the provider's error *code*: response
bodies and descriptions may echo tokens, so they never reach an exception, a log or a metric.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote_plus, urlencode

import aiohttp

from sidecar.errors import ProviderError, RefreshFailed
from sidecar.oidc.discovery import MAX_BODY, ProviderMetadata, read_limited

if TYPE_CHECKING:  # the metric objects are handed in; oidc does not depend on the wiring layer
    from sidecar.observability import Metrics

Grant = Literal["authorization_code", "refresh_token"]
Endpoint = Literal["token", "revocation", "global_sign_out"]

# RFC 6749 §5.2 error codes are short ASCII words; anything else is not repeated anywhere.
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """One HTTP POST to the provider, fully built. ``body`` holds secrets and is kept out of repr."""

    endpoint: Endpoint
    url: str
    headers: Mapping[str, str]
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class TokenSet:
    """A successful token response (RFC 6749 §5.1). Tokens are kept out of repr."""

    access_token: str = field(repr=False)
    id_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    # Seconds the access token lives, when the provider says (it is only RECOMMENDED).
    expires_in: int | None
    token_type: str


def basic_credentials(client_id: str, client_secret: str) -> str:
    """``Authorization`` value for client_secret_basic: both parts form-urlencoded first (RFC 6749 §2.3.1)."""
    pair = f"{quote_plus(client_id, safe='')}:{quote_plus(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


def _form_request(
    endpoint: Endpoint, url: str, params: list[tuple[str, str]], client_id: str, client_secret: str | None
) -> ProviderRequest:
    headers = {"Accept": "application/json", "Content-Type": _FORM}
    if client_secret:
        headers["Authorization"] = basic_credentials(client_id, client_secret)
    else:
        # A public client identifies itself in the body (RFC 6749 §2.3.1, §4.1.3; Cognito revoke too).
        params = [*params, ("client_id", client_id)]
    return ProviderRequest(endpoint, url, headers, urlencode(params).encode("ascii"))


def code_request(
    meta: ProviderMetadata, *, client_id: str, client_secret: str | None, code: str, verifier: str,
    redirect_uri: str,
) -> ProviderRequest:
    """Authorization code exchange with the PKCE verifier (RFC 6749 §4.1.3, RFC 7636 §4.5)."""
    params = [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect_uri),
              ("code_verifier", verifier)]
    return _form_request("token", meta.token_endpoint, params, client_id, client_secret)


def refresh_request(
    meta: ProviderMetadata, *, client_id: str, client_secret: str | None, refresh_token: str
) -> ProviderRequest:
    """Refresh token grant (RFC 6749 §6)."""
    params = [("grant_type", "refresh_token"), ("refresh_token", refresh_token)]
    return _form_request("token", meta.token_endpoint, params, client_id, client_secret)


def revocation_request(
    meta: ProviderMetadata, *, client_id: str, client_secret: str | None, refresh_token: str
) -> ProviderRequest | None:
    """Refresh token revocation (RFC 7009 §2.1); None when the provider has no revocation endpoint."""
    if meta.revocation_endpoint is None:
        return None
    params = [("token", refresh_token), ("token_type_hint", "refresh_token")]
    return _form_request("revocation", meta.revocation_endpoint, params, client_id, client_secret)


def global_sign_out_request(meta: ProviderMetadata, *, access_token: str) -> ProviderRequest | None:
    """Cognito ``GlobalSignOut`` (the access token authorizes itself); None for providers without it."""
    if meta.global_sign_out_endpoint is None:
        return None
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "AWSCognitoIdentityProviderService.GlobalSignOut",
    }
    body = json.dumps({"AccessToken": access_token}).encode("utf-8")
    return ProviderRequest("global_sign_out", meta.global_sign_out_endpoint, headers, body)


def error_code(body: bytes) -> str | None:
    """The OAuth ``error`` (or AWS ``__type``) of an error body, if it is a plain short code."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    code = document.get("error") or document.get("__type")
    if not isinstance(code, str):
        return None
    code = code.rsplit("#", 1)[-1]  # "com.amazonaws...#NotAuthorizedException"
    return code if _ERROR_CODE.fullmatch(code) else None


def _failure(endpoint: Endpoint, status: int, body: bytes) -> ProviderError:
    return ProviderError(f"{endpoint}_http_{status}", error_code(body) or "")


def _optional_str(document: Mapping[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ProviderError("token_invalid_response", f"{key} is not a string")
    return value


def _expires_in(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)  # some providers send a numeric string
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProviderError("token_invalid_response", "expires_in is not a number of seconds")
    return value


def parse_token_response(status: int, body: bytes, *, grant: Grant) -> TokenSet:
    """Judge a token endpoint answer: a :class:`TokenSet`, :class:`RefreshFailed`, or :class:`ProviderError`.

    ``invalid_grant`` on a refresh means the session is over (RFC 6749 §5.2). An ID token is required
    in the code exchange (OpenID Connect Core §3.1.3.3) and optional on refresh (§12.2).
    """
    if status != 200:
        if grant == "refresh_token" and status in (400, 401) and error_code(body) == "invalid_grant":
            raise RefreshFailed("invalid_grant")
        raise _failure("token", status, body)
    try:
        document = json.loads(body)
    except ValueError:
        raise ProviderError("token_invalid_response", "not JSON") from None
    if not isinstance(document, dict):
        raise ProviderError("token_invalid_response", "not a JSON object")
    access_token = _optional_str(document, "access_token")
    token_type = _optional_str(document, "token_type")
    if access_token is None:
        raise ProviderError("token_invalid_response", "access_token is missing")
    if token_type is None or token_type.lower() != "bearer":
        raise ProviderError("token_invalid_response", "token_type is not Bearer")
    id_token = _optional_str(document, "id_token")
    if id_token is None and grant == "authorization_code":
        raise ProviderError("token_invalid_response", "id_token is missing")
    return TokenSet(
        access_token=access_token,
        id_token=id_token,
        refresh_token=_optional_str(document, "refresh_token"),
        expires_in=_expires_in(document.get("expires_in")),
        token_type=token_type,
    )


def _outcome(reason: str) -> str:
    """Metric label for a failed token request: timeout, unreachable, invalid_response, http_4xx, …"""
    kind = reason.removeprefix("token_")
    return f"http_{kind[5]}xx" if kind.startswith("http_") else kind


class OidcClient:
    """Sends the requests built above over the shared session; one instance per app."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        meta: ProviderMetadata,
        client_id: str,
        client_secret: str | None,
        timeout: float,
        metrics: Metrics,
    ) -> None:
        self._session = session
        self._meta = meta
        self._client_id = client_id
        self._client_secret = client_secret
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._metrics = metrics

    async def _send(self, request: ProviderRequest) -> tuple[int, bytes]:
        endpoint = request.endpoint
        try:
            async with self._session.post(
                request.url, data=request.body, headers=dict(request.headers), timeout=self._timeout,
                # A redirect from a token endpoint is never expected; do not carry credentials along.
                allow_redirects=False,
            ) as response:
                return response.status, await read_limited(response, MAX_BODY)
        except TimeoutError:
            raise ProviderError(f"{endpoint}_timeout") from None
        except aiohttp.ClientError:
            raise ProviderError(f"{endpoint}_unreachable") from None
        except ValueError:
            raise ProviderError(f"{endpoint}_invalid_response", "body too large") from None

    async def _token(self, grant: Grant, request: ProviderRequest) -> TokenSet:
        with self._metrics.token_request_seconds.labels(grant).time():
            try:
                status, body = await self._send(request)
                tokens = parse_token_response(status, body, grant=grant)
            except RefreshFailed:
                self._metrics.token_requests.labels(grant, "invalid_grant").inc()
                raise
            except ProviderError as exc:
                self._metrics.token_requests.labels(grant, _outcome(exc.reason)).inc()
                self._metrics.provider_errors.labels("token").inc()
                raise
        self._metrics.token_requests.labels(grant, "ok").inc()
        return tokens

    async def _call(self, request: ProviderRequest) -> None:
        try:
            status, body = await self._send(request)
            if status != 200:
                raise _failure(request.endpoint, status, body)
        except ProviderError:
            self._metrics.provider_errors.labels(request.endpoint).inc()
            raise

    async def exchange_code(self, code: str, verifier: str, redirect_uri: str) -> TokenSet:
        request = code_request(self._meta, client_id=self._client_id, client_secret=self._client_secret,
                               code=code, verifier=verifier, redirect_uri=redirect_uri)
        return await self._token("authorization_code", request)

    async def refresh(self, refresh_token: str) -> TokenSet:
        """New tokens; :class:`RefreshFailed` when the provider refuses the refresh token."""
        request = refresh_request(self._meta, client_id=self._client_id, client_secret=self._client_secret,
                                  refresh_token=refresh_token)
        return await self._token("refresh_token", request)

    async def revoke(self, refresh_token: str) -> None:
        """Revoke the refresh token (at Cognito, also tokens issued from it). No-op without an endpoint."""
        request = revocation_request(self._meta, client_id=self._client_id,
                                     client_secret=self._client_secret, refresh_token=refresh_token)
        if request is not None:
            await self._call(request)

    async def global_sign_out(self, access_token: str) -> None:
        """Cognito GlobalSignOut: ends every session of the user. No-op for providers without it."""
        request = global_sign_out_request(self._meta, access_token=access_token)
        if request is not None:
            await self._call(request)
