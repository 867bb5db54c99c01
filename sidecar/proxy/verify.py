"""Forward-auth: ``/auth/verify`` answers a gateway's subrequest (nginx ``auth_request``, ingress-nginx
``auth-url``, Traefik ForwardAuth, Caddy ``forward_auth``, Envoy ``ext_authz`` over HTTP).

The request is judged exactly as the proxy route judges one (:mod:`sidecar.proxy.gate`): the same
authenticator (validation cache, transparent refresh, CSRF), the same dot-segment check, public paths
and rules, but on the *original* method and URI, which the gateway names in ``X-Original-Method`` /
``X-Original-URI`` (nginx), ``X-Forwarded-Method`` / ``X-Forwarded-Uri`` (Traefik, Caddy) or
``X-Original-Method`` / ``X-Original-URL`` (ingress-nginx, an absolute URL); Envoy's ``ext_authz``
appends the original path to ``/auth/verify`` and keeps the method. Those
headers are believed only from ``trusted_proxies``; from anyone else they are ignored and the request
is judged as what it is (a request for ``/auth/verify``).

The original method decides whether the CSRF double-submit applies: the gateway passes the browser's
headers on (``Cookie``, ``X-XSRF-TOKEN``, ``Origin``), so a cross-site ``POST`` through the gateway is
refused like one through the proxy, although the subrequest itself may be a ``GET``.

Answers: 200 with the identity response headers (the gateway copies them onto the request to the
app) and any renewed cookies; 401 with the login URL in ``X-Authsidecar-Login`` and never a redirect
(nginx's ``auth_request`` takes only 2xx, 401 and 403: its ``error_page 401`` sends the browser to
log in); 403 when CSRF or a rule refuses; 400 for an original URI that cannot be judged.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from sidecar.errors import BadOriginalRequest, RefreshFailed, TokenRejected
from sidecar.keys import IDENTITY, LOGIN_URL, RESPONSE_HOOKS, ROUTE_CLASS
from sidecar.proxy.access import AccessPolicy
from sidecar.proxy.headers import HeaderPolicy

VERIFY_PATH: Final = "/auth/verify"
# nginx refuses request lines past its large_client_header_buffers (8 KiB by default) anyway.
MAX_ORIGINAL_URI: Final = 8192
# An origin-form request target (RFC 9112 §3.2.1) as a client sends it: visible ASCII, no space.
_ORIGINAL_URI = re.compile(r"/[\x21-\x7e]*")
_METHOD = re.compile(r"[A-Z]{1,20}")
# ingress-nginx's X-Original-URL: $scheme://$http_host$request_uri.
_ORIGINAL_URL = re.compile(r"(https?://[A-Za-z0-9.:\[\]-]+)(/[\x21-\x7e]*)?")


class Verify:
    """The forward-auth handler."""

    def __init__(self, *, access: AccessPolicy, headers: HeaderPolicy, login_url: str) -> None:
        self.access = access
        self.headers = headers
        # The sidecar's own absolute login URL (its public origin + /auth/login).
        self.login_url = login_url

    async def handle(self, request: web.Request) -> web.StreamResponse:
        request[ROUTE_CLASS] = "verify"
        original = self._original(request)
        judged = request
        if original is not None:
            method, target, _origin = original
            # The clone's state is a shallow copy: renewed cookies it records land in this list,
            # so they go out on this response.
            if RESPONSE_HOOKS not in request:
                request[RESPONSE_HOOKS] = []
            judged = request.clone(method=method, rel_url=URL(target, encoded=True))
        path = judged.path
        self.access.vet(path)
        if not path.isprintable():
            # %0D%0A and friends: no app route has them, and a log line or header must not either.
            raise BadOriginalRequest("bad_original_uri")
        try:
            caller = await self.access.decide(judged)
        except (TokenRejected, RefreshFailed):
            request[LOGIN_URL] = self._login(request, original)
            raise
        out: CIMultiDict[str] = CIMultiDict()
        if caller is not None:
            request[IDENTITY] = caller.identity
            out.extend(self.headers.verify_headers(caller.identity, caller.access_token,
                                                   request.headers.getall("Cookie", [])))
        return web.Response(status=200, headers=out)

    def _original(self, request: web.Request) -> tuple[str, str, str | None] | None:
        """The gateway's original method, URI and (when it names one) origin, from a trusted peer."""
        headers = request.headers
        uri = headers.get("X-Original-URI")
        method = headers.get("X-Original-Method")
        origin = None
        if uri is None:
            uri = headers.get("X-Forwarded-Uri")
            method = headers.get("X-Forwarded-Method")
        url = headers.get("X-Original-URL") if uri is None else None
        if uri is None and url is None:
            # Envoy: /auth/verify/orders/7?x=1 asks about GET /orders/7?x=1.
            raw = request.raw_path
            if not raw.startswith(VERIFY_PATH + "/"):
                return None
            uri, method = raw[len(VERIFY_PATH):], request.method
        if not self.headers.is_trusted(request.remote):
            return None
        if len(uri or url or "") > MAX_ORIGINAL_URI:
            raise BadOriginalRequest("original_uri_too_long")
        if url is not None:
            match = _ORIGINAL_URL.fullmatch(url)
            if match is None:
                raise BadOriginalRequest("bad_original_uri")
            origin, uri = match[1], match[2] or "/"
            method = headers.get("X-Original-Method")
        if uri is None or _ORIGINAL_URI.fullmatch(uri) is None:
            raise BadOriginalRequest("bad_original_uri")
        if method is None:
            # Without the gateway's word the subrequest's own method stands (nginx passes the
            # original one on; Caddy and Traefik send GET and name the original in the header).
            method = request.method
        elif _METHOD.fullmatch(method) is None:
            raise BadOriginalRequest("bad_original_method")
        return method, uri, origin

    def _login(self, request: web.Request, original: tuple[str, str, str | None] | None) -> str:
        """The login URL that brings the browser back to the original URL (validated at login)."""
        if original is None:
            return self.login_url
        _method, target, origin = original
        headers = request.headers
        host = headers.get("X-Forwarded-Host")
        if origin is not None:
            target = origin + target
        elif host:
            proto = headers.get("X-Forwarded-Proto", "https")
            target = f"{proto}://{host}{target}"
        return f"{self.login_url}?return_to={quote(target, safe='')}"
