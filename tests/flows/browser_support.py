"""Helpers for the browser-flow tests: raw Set-Cookie parsing, step-by-step logins, CSRF headers.

``Stack.login`` runs a whole login in one call; the tests here also need its steps apart (three tabs
at once, a callback replayed, a nonce swapped between tabs), a browser whose cookies age on the
stack's fake clock (and, optionally, that treats the sidecar as a secure origin so ``Secure`` cookies
travel over loopback http), and the login transaction decrypted to compare its verifier and nonce
with what the provider was sent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.cookies import BaseCookie, Morsel
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from cryptography.fernet import Fernet
from yarl import URL

from sidecar.auth.transaction import derive_key
from tests.flows.conftest import PASSWORDS, Stack, read_form

APP_ORIGIN = "http://app.example.test"
EVIL_ORIGIN = "https://evil.test"
_NO_URL = URL()
AUTH_COOKIES = ("access_token", "id_token", "refresh_token", "XSRF-TOKEN")


# -- Set-Cookie headers, as sent ------------------------------------------------------------------


@dataclass(frozen=True)
class SetCookie:
    """One raw ``Set-Cookie`` header: name, value and attributes (names lower-cased)."""

    name: str
    value: str
    attrs: dict[str, str] = field(default_factory=dict)

    def has(self, attr: str) -> bool:
        return attr.lower() in self.attrs

    def get(self, attr: str) -> str | None:
        return self.attrs.get(attr.lower())

    @property
    def max_age(self) -> int | None:
        raw = self.get("max-age")
        return None if raw is None else int(raw)

    @property
    def clears(self) -> bool:
        """The header removes the cookie (empty value, Max-Age=0)."""
        return self.value in ("", '""') and self.max_age == 0


def parse_set_cookie(header: str) -> SetCookie:
    pair, *attributes = (part.strip() for part in header.split(";"))
    name, _, value = pair.partition("=")
    attrs: dict[str, str] = {}
    for attribute in attributes:
        if not attribute:
            continue
        key, _, attr_value = attribute.partition("=")
        attrs[key.strip().lower()] = attr_value.strip()
    return SetCookie(name.strip(), value.strip(), attrs)


def set_cookies(response: aiohttp.ClientResponse) -> list[SetCookie]:
    """Every Set-Cookie header of ``response`` in order, parsed from the raw bytes."""
    return [
        parse_set_cookie(value.decode("latin-1"))
        for name, value in response.raw_headers
        if name.lower() == b"set-cookie"
    ]


def set_cookie_map(response: aiohttp.ClientResponse) -> dict[str, SetCookie]:
    """The Set-Cookie headers by cookie name; a name sent twice is an error here."""
    found: dict[str, SetCookie] = {}
    for cookie in set_cookies(response):
        assert cookie.name not in found, f"{cookie.name} set twice on one response"
        found[cookie.name] = cookie
    return found


# -- the browser ----------------------------------------------------------------------------------


class BrowserJar(aiohttp.CookieJar):
    """A cookie jar that behaves like a browser next to the stack's fake clock.

    * Cookies expire by ``Max-Age`` on the stack's clock, so ``stack.clock.advance(3601)`` makes the
      browser drop an access token cookie set with ``Max-Age=3600``, as a browser would an hour later.
    * No 8190-byte cap on the ``Cookie`` header: browsers send every cookie of a host (RFC 6265 §5.4
      sets no total; Chrome and Firefox cap the count per domain, not the header), while aiohttp's
      jar quietly leaves cookies out past that size. A user in 150 groups has two chunked tokens of
      about 15 KB each, which only a browser-like jar delivers whole.
    """

    _limits_enabled = False

    def __init__(self, clock: Callable[[], float], **kwargs: Any) -> None:
        super().__init__(unsafe=True, **kwargs)
        self._clock = clock
        self._deadlines: dict[tuple[str, str], float] = {}

    def _remember(self, name: str, path: str | None, max_age: str | None) -> None:
        key = (name, path or "/")
        if max_age:
            self._deadlines[key] = self._clock() + int(max_age)
        else:
            self._deadlines.pop(key, None)  # a session cookie now

    def update_cookies(self, cookies: Any, response_url: URL = _NO_URL, *args: Any, **kwargs: Any) -> None:
        items = cookies.items() if hasattr(cookies, "items") else cookies
        for name, morsel in items:
            if isinstance(morsel, Morsel):
                self._remember(name, morsel["path"], morsel["max-age"])
        super().update_cookies(cookies, response_url, *args, **kwargs)

    def update_cookies_from_headers(self, headers: Sequence[str], response_url: URL) -> None:
        for header in headers:
            cookie = parse_set_cookie(header)
            self._remember(cookie.name, cookie.get("path"), cookie.get("max-age"))
        super().update_cookies_from_headers(headers, response_url)

    def filter_cookies(self, request_url: URL = _NO_URL) -> BaseCookie[str]:
        now = self._clock()
        self.clear(lambda m: self._deadlines.get((m.key, m["path"] or "/"), now + 1) <= now)
        return super().filter_cookies(request_url)


async def new_browser(stack: Stack, *, secure: bool = False) -> aiohttp.ClientSession:
    """A browser on the stack's clock. ``secure``: it sends ``Secure`` cookies to the sidecar over
    plain http, as browsers do for localhost (loopback is a secure context)."""
    secure_origins = [stack.base] if secure else None
    session = aiohttp.ClientSession(cookie_jar=BrowserJar(stack.clock, treat_as_secure_origin=secure_origins))
    stack._exit.push_async_callback(session.close)
    return session


def jar_cookies(browser: aiohttp.ClientSession) -> dict[str, str]:
    return {morsel.key: morsel.value for morsel in browser.cookie_jar}


def plant_cookie(stack: Stack, browser: aiohttp.ClientSession, name: str, value: str,
                 path: str = "/") -> None:
    """Put a cookie into the jar as a script or a sibling subdomain could."""
    browser.cookie_jar.update_cookies({name: value}, URL(stack.url(path)))


def csrf_headers(stack: Stack, browser: aiohttp.ClientSession, *, origin: str | None = None,
                 xsrf_cookie: str = "XSRF-TOKEN") -> dict[str, str]:
    """What the SPA sends on an unsafe request: the XSRF cookie echoed in a header, its Origin."""
    token = stack.cookie(browser, xsrf_cookie)
    assert token, f"no {xsrf_cookie} cookie in the jar"
    return {"X-XSRF-TOKEN": token, "Origin": origin or stack.base}


# -- logging in step by step ----------------------------------------------------------------------


def query_of(url: str) -> dict[str, str]:
    pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"a parameter appears twice in {url}"
    return dict(pairs)


async def start_login(stack: Stack, browser: aiohttp.ClientSession, **params: str) -> str:
    """GET /auth/login; the provider's authorize URL it redirects to."""
    start = await browser.get(stack.url("/auth/login"), params=params, allow_redirects=False)
    assert start.status == 302, start.status
    location = start.headers["Location"]
    assert location.startswith(stack.provider.url("/oauth2/authorize?")), location
    return location


async def sign_in(stack: Stack, browser: aiohttp.ClientSession, authorize_url: str,
                  user: str = "alice", *, cancel: bool = False) -> str:
    """Through the provider's form (or its SSO session): the callback URL it sends the browser to."""
    page = await browser.get(authorize_url, allow_redirects=False)
    if page.status == 302:  # the provider remembers the user: no form
        callback = page.headers["Location"]
    else:
        assert page.status == 200, page.status
        action, fields = read_form(await page.text())
        if cancel:
            fields["action"] = "cancel"
        else:
            fields.update(username=user, password=PASSWORDS[user])
        posted = await browser.post(page.url.join(URL(action)), data=fields, allow_redirects=False)
        assert posted.status == 302, await posted.text()
        callback = posted.headers["Location"]
    assert callback.startswith(stack.url("/auth/callback?")), callback
    return callback


async def finish(browser: aiohttp.ClientSession, callback: str,
                 headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    """The browser arrives back at /auth/callback (redirect not followed)."""
    return await browser.get(URL(callback, encoded=True), allow_redirects=False, headers=headers)


async def login_as(stack: Stack, browser: aiohttp.ClientSession, user: str = "alice", *,
                   at_provider: aiohttp.ClientSession | None = None, **params: str) -> aiohttp.ClientResponse:
    """A whole login that also works when the provider already has a session (forces its form).

    ``at_provider``: the client for the provider's pages. Provider and sidecar share the host
    127.0.0.1 here, so a browser holding 30 KB of sidecar cookies would send them to the provider
    too, which a real provider on its own host never sees.
    """
    params.setdefault("prompt", "login")
    authorize = await start_login(stack, browser, **params)
    callback = await sign_in(stack, at_provider or browser, authorize, user)
    return await finish(browser, callback)


def transaction(stack: Stack, cookie_value: str) -> dict[str, Any]:
    """The decrypted login transaction cookie (what only the sidecar can read)."""
    secret = stack.settings.cookies.secret
    assert secret is not None
    key = derive_key(secret.get_secret_value().encode(), b"authsidecar/transaction/v1")
    # A Fernet token that ends in base64 padding ("=") is sent as a quoted cookie-value (RFC 6265
    # §4.1.1 allows DQUOTEs around it); whether it has padding depends on the payload's length,
    # which varies with the stack's port numbers.
    if len(cookie_value) >= 2 and cookie_value[0] == cookie_value[-1] == '"':
        cookie_value = cookie_value[1:-1]
    document = json.loads(Fernet(base64.urlsafe_b64encode(key)).decrypt(cookie_value.encode()))
    session: dict[str, Any] = document["session"]
    return session


async def revoke_at_provider(stack: Stack, refresh_token: str) -> None:
    """Revoke a refresh token the way another client of the provider would (RFC 7009)."""
    async with aiohttp.ClientSession() as client:
        answer = await client.post(stack.provider.url("/oauth2/revoke"),
                                   data={"token": refresh_token, "client_id": "authsidecar-dev"})
        assert answer.status == 200
    assert not stack.provider.refresh_token_is_live(refresh_token)
