"""The development OpenID provider: a Cognito user pool + Hosted UI on one loopback server.

It is what `authsidecar dev` runs so the product works on a laptop without a cloud account, and the
fake every test talks to over real HTTP. DEV ONLY: its users and passwords are public (see users.py).

Routes (Cognito's shapes; the issuer and the Hosted UI domain are the same base URL here):
    GET  /.well-known/openid-configuration   discovery
    GET  /.well-known/jwks.json              public keys
    GET  /oauth2/authorize, GET /login       authorization request -> sign-in form (or SSO via cookie)
    POST /login, POST /oauth2/authorize      the form's submission -> 302 redirect_uri?code=&state=
    POST /oauth2/token                       authorization_code (+PKCE) and refresh_token grants
    POST /oauth2/revoke                      RFC 7009, Cognito's shape (refresh tokens only)
    GET|POST /oauth2/userInfo                Bearer access token -> user attributes
    GET  /logout                             Cognito shape: client_id + logout_uri
    GET  /oauth2/logout                      OIDC RP-initiated logout: id_token_hint, post_logout_...
    POST /                                   cognito-idp JSON API; X-Amz-Target ...GlobalSignOut only
    (out) POST <backchannel_logout_uris>     OIDC Back-Channel Logout 1.0 when a sign-in session ends
    /_dev/...                                test hooks over HTTP, only with ProviderConfig(dev_routes=True)

Every request is counted in `DevProvider.calls` and may be failed on purpose with `set_failure`
(or answered wrongly on purpose: `set_failure("token", "foreign_id_sub")`, see provider_failures.py).
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from sidecar.dev.provider_api import api_routes, dev_routes
from sidecar.dev.provider_claims import Grant, access_token_claims, id_token_claims
from sidecar.dev.provider_config import COGNITO_SCOPES, ProviderConfig
from sidecar.dev.provider_failures import Endpoint, FailureMode, FailureSwitch
from sidecar.dev.provider_keys import KeyRing
from sidecar.dev.provider_oauth import oauth_routes
from sidecar.dev.provider_state import Family, InvalidToken, Ledger, OAuthError
from sidecar.dev.users import DEFAULT_USERS, DevUser
from sidecar.identity import Clock

__all__ = [
    "COGNITO_SCOPES",
    "DEFAULT_USERS",
    "DevProvider",
    "DevUser",
    "Endpoint",
    "FailureMode",
    "InvalidToken",
    "ProviderConfig",
    "Route",
    "start_provider",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# (method, path, endpoint name for counters and failures, handler)
Route = tuple[str, str, Endpoint, Handler]


class DevProvider:
    """All state of one dev provider: keys, codes, token families, sessions, counters, failures."""

    def __init__(self, config: ProviderConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.keys = KeyRing()
        self.ledger = Ledger()
        self.failures = FailureSwitch()
        # Requests per endpoint: "discovery", "jwks", "authorize", "login", "token:authorization_code",
        # "token:refresh_token", "token:unsupported", "revoke", "userinfo", "logout", "end_session",
        # "global_sign_out". Counted before any injected failure applies.
        self.calls: collections.Counter[str] = collections.Counter()
        self._users = {user.username: user for user in config.users}
        # Answers of the back-channel logout URIs, in order (0: no answer).
        self.backchannel_statuses: list[int] = []
        self._issuer: str | None = None

    # -- identity of this provider -------------------------------------------------------------

    @property
    def issuer(self) -> str:
        if self._issuer is None:
            raise RuntimeError(
                "DevProvider.issuer is not set: bind the server with start_provider(), "
                "or assign provider.issuer = str(server.make_url('')) after aiohttp_server()"
            )
        return self._issuer

    @issuer.setter
    def issuer(self, base_url: str | URL) -> None:
        self._issuer = str(base_url).rstrip("/")

    def url(self, path: str) -> str:
        return f"{self.issuer}{path}"

    def now(self) -> int:
        return int(self.clock())

    def user(self, username: str) -> DevUser | None:
        return self._users.get(username)

    def _resolve(self, user: DevUser | str) -> DevUser:
        if isinstance(user, DevUser):
            return user
        found = self.user(user)
        if found is None:
            raise KeyError(f"no dev user named {user!r}")
        return found

    # -- test hooks ----------------------------------------------------------------------------

    def rotate_keys(self, keep_old: bool = True) -> str:
        """Sign with a new key (returns its kid). keep_old=False also drops old keys from the JWKS."""
        return self.keys.rotate(keep_old=keep_old)

    def set_failure(self, endpoint: Endpoint, mode: FailureMode) -> None:
        """Make `endpoint` answer 500, garbage JSON, or hang ("timeout") until reset or shutdown; or,
        on "token", mint ID tokens naming another user than their access token ("foreign_id_sub")."""
        self.failures.set(endpoint, mode)

    async def wait_hanging(self, endpoint: Endpoint, count: int = 1) -> None:
        """Return once `count` requests are stuck in a "timeout" failure on `endpoint`."""
        await self.failures.wait_hanging(endpoint, count)

    def sign(self, claims: Mapping[str, Any], *, extra_headers: Mapping[str, Any] | None = None) -> str:
        """Sign arbitrary claims with the current key (for tokens no real flow would produce)."""
        return self.keys.sign(claims, extra_headers=extra_headers)

    def logout_token(self, *, sid: str | None = None, sub: str | None = None,
                     headers: Mapping[str, Any] | None = None, **overrides: Any) -> str:
        """A back-channel logout token (typed ``logout+jwt``); an override of None drops a claim."""
        now = self.now()
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": self.config.client_id, "iat": now, "exp": now + 120,
            "jti": secrets.token_hex(16), "events": {BACKCHANNEL_EVENT: {}},
        }
        if sid is not None:
            claims["sid"] = sid
        if sub is not None:
            claims["sub"] = sub
        header = {k: v for k, v in {"typ": "logout+jwt", **(headers or {})}.items() if v is not None}
        return self.keys.sign(_apply(claims, overrides), extra_headers=header)

    async def backchannel_logout(self, *, sid: str | None = None, sub: str | None = None) -> list[int]:
        """POST a logout token to every registered back-channel logout URI; their statuses.

        What the end of a sign-in session does, and a test hook ("end this session now")."""
        statuses = []
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()) as http:
            for uri in self.config.backchannel_logout_uris:
                self.calls["backchannel_logout"] += 1
                form = {"logout_token": self.logout_token(sid=sid, sub=sub)}
                try:
                    async with http.post(uri, data=form) as resp:
                        statuses.append(resp.status)
                except (aiohttp.ClientError, TimeoutError):
                    statuses.append(0)
        self.backchannel_statuses.extend(statuses)
        return statuses

    def new_grant(self, user: DevUser | str, scope: str | None = None, auth_time: int | None = None,
                  sid: str | None = None) -> Grant:
        return Grant(
            user=self._resolve(user),
            client_id=self.config.client_id,
            scope=scope if scope is not None else " ".join(self.config.allowed_scopes),
            origin_jti=secrets.token_hex(16),
            event_id=secrets.token_hex(16),
            auth_time=auth_time if auth_time is not None else self.now(),
            # Cognito names no session in its tokens; a provider that speaks back-channel logout does.
            sid=sid if self.config.backchannel_logout_uris else None,
        )

    def mint_access_token(self, user: DevUser | str, **claim_overrides: Any) -> str:
        """A live access token for `user` (revocable by GlobalSignOut). An override of None drops the
        claim: mint_access_token("bob", exp=None) has no exp; use **{"cognito:groups": [...]} for colons."""
        family = self.ledger.open_family(self.new_grant(user), refresh_ttl=None, now=self.now())
        return self._mint_access(family, claim_overrides)

    def mint_id_token(self, user: DevUser | str, nonce: str | None = None, **overrides: Any) -> str:
        family = self.ledger.open_family(self.new_grant(user), refresh_ttl=None, now=self.now())
        return self._mint_id(family, nonce, None, overrides)

    def issue_tokens(
        self, user: DevUser | str, *, scope: str | None = None, nonce: str | None = None
    ) -> dict[str, Any]:
        """What a successful code exchange would return, without the browser round trip."""
        family = self.ledger.open_family(
            self.new_grant(user, scope), refresh_ttl=self.config.refresh_ttl, now=self.now()
        )
        return self.token_response(family, nonce=nonce, refresh_token=family.refresh_token)

    def refresh_token_is_live(self, refresh_token: str) -> bool:
        try:
            self.ledger.family_of_refresh(refresh_token, self.config.client_id, self.now())
        except OAuthError:
            return False
        return True

    def check_access_token(self, token: str) -> dict[str, Any]:
        """The claims of an access token this provider would still honour, else InvalidToken."""
        claims = self.keys.verify(token)
        if claims is None or claims.get("token_use") != "access" or claims.get("iss") != self.issuer:
            raise InvalidToken("Invalid Access Token")
        exp = claims.get("exp")
        if not isinstance(exp, int) or self.now() >= exp:
            raise InvalidToken("Access Token has expired")
        if not self.ledger.is_live(claims.get("origin_jti")):
            raise InvalidToken("Access Token has been revoked")
        return claims

    # -- minting -------------------------------------------------------------------------------

    def token_response(
        self, family: Family, *, nonce: str | None, refresh_token: str | None
    ) -> dict[str, Any]:
        """RFC 6749 §5.1 body. Cognito sends an id_token only when the grant holds the openid scope."""
        access = self._mint_access(family, {})
        body: dict[str, Any] = {}
        if "openid" in family.grant.scope.split():
            id_overrides: dict[str, Any] = {}
            if self.failures.mode("token") == "foreign_id_sub":
                # A mix-up the relying party must refuse: the ID token names another user than the
                # access token (and, on refresh, than the session: OIDC Core §12.2).
                id_overrides["sub"] = self._foreign_sub(family.grant.user)
            body["id_token"] = self._mint_id(family, nonce, access, id_overrides)
        body["access_token"] = access
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        body["expires_in"] = self.config.access_ttl
        body["token_type"] = "Bearer"  # noqa: S105 - a token type, not a secret
        return body

    def _foreign_sub(self, user: DevUser) -> str:
        """The ``sub`` of another user of the pool (a made-up one when there is no other)."""
        others = [u.sub for u in self.config.users if u.sub != user.sub]
        return others[0] if others else f"foreign-{user.sub}"

    def _mint_access(self, family: Family, overrides: Mapping[str, Any]) -> str:
        now = self.now()
        claims = access_token_claims(
            family.grant, issuer=self.issuer, now=now, ttl=self.config.access_ttl, jti=secrets.token_hex(16)
        )
        family.last_exp = max(family.last_exp, now + self.config.access_ttl)
        return self.keys.sign(_apply(claims, overrides))

    def _mint_id(
        self, family: Family, nonce: str | None, access: str | None, overrides: Mapping[str, Any]
    ) -> str:
        now = self.now()
        claims = id_token_claims(
            family.grant,
            issuer=self.issuer,
            now=now,
            ttl=self.config.id_ttl,
            jti=secrets.token_hex(16),
            nonce=nonce,
            access_token=access,
        )
        family.last_exp = max(family.last_exp, now + self.config.id_ttl)
        return self.keys.sign(_apply(claims, overrides))

    # -- the application -----------------------------------------------------------------------

    def app(self) -> web.Application:
        """A fresh aiohttp application over this provider's state (state outlives the app)."""
        app = web.Application()
        routes: list[Route] = [
            ("GET", "/.well-known/openid-configuration", "discovery", self._discovery),
            ("GET", "/.well-known/jwks.json", "jwks", self._jwks),
            *oauth_routes(self),
            *api_routes(self),
        ]
        for method, path, endpoint, handler in routes:
            app.router.add_route(method, path, self._instrument(endpoint, handler))
        if self.config.dev_routes:
            app.router.add_routes(dev_routes(self))
        app.cleanup_ctx.append(self._lifetime)
        app.on_shutdown.append(self._release_hangs)
        return app

    async def _lifetime(self, app: web.Application) -> AsyncIterator[None]:
        self.failures.start()
        yield
        self.failures.release_all()

    async def _release_hangs(self, app: web.Application) -> None:
        # on_shutdown runs before aiohttp waits for in-flight handlers; release hung ones now.
        self.failures.release_all()

    def _instrument(self, endpoint: Endpoint, handler: Handler) -> Handler:
        """Count the call, apply any injected failure, map OAuthError to its RFC 6749 §5.2 answer."""

        async def instrumented(request: web.Request) -> web.StreamResponse:
            self.calls[await self._call_name(endpoint, request)] += 1
            failure = await self.failures.apply(endpoint)
            if failure is not None:
                return failure
            try:
                return await handler(request)
            except OAuthError as error:
                return oauth_error_response(error)

        return instrumented

    async def _call_name(self, endpoint: Endpoint, request: web.Request) -> str:
        if endpoint != "token":
            return endpoint
        grant_type = (await request.post()).get("grant_type")
        if grant_type == "authorization_code" or grant_type == "refresh_token":
            return f"token:{grant_type}"
        return "token:unsupported"

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": self.url("/oauth2/authorize"),
                "token_endpoint": self.url("/oauth2/token"),
                "userinfo_endpoint": self.url("/oauth2/userInfo"),
                "revocation_endpoint": self.url("/oauth2/revoke"),
                "end_session_endpoint": self.url("/oauth2/logout"),
                "jwks_uri": self.url("/.well-known/jwks.json"),
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "subject_types_supported": ["public"],
                "scopes_supported": list(self.config.allowed_scopes),
                "code_challenge_methods_supported": ["S256"],
                "backchannel_logout_supported": bool(self.config.backchannel_logout_uris),
                "backchannel_logout_session_supported": bool(self.config.backchannel_logout_uris),
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "claims_supported": [
                    "aud",
                    "auth_time",
                    "cognito:groups",
                    "cognito:username",
                    "email",
                    "email_verified",
                    "exp",
                    "iat",
                    "iss",
                    "name",
                    "nonce",
                    "origin_jti",
                    "sub",
                    "token_use",
                ],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self.keys.jwks())


def oauth_error_response(error: OAuthError) -> web.Response:
    """RFC 6749 §5.2. Cognito answers every token-endpoint error, invalid_client included, with 400."""
    return web.json_response(
        {"error": error.error, "error_description": error.description},
        status=error.status,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def _apply(claims: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


async def start_provider(
    provider: DevProvider, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve `provider` on host:port (0 = any free port), set its issuer, return (runner, base URL).
    The caller owns the runner: `await runner.cleanup()` stops the server and releases any hang."""
    runner = web.AppRunner(provider.app())
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
    except BaseException:
        await runner.cleanup()
        raise
    base_url = str(URL.build(scheme="http", host=host, port=bound_port))
    provider.issuer = base_url
    return runner, provider.issuer
