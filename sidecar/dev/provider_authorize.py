"""Browser-facing endpoints of the dev provider: authorize + sign-in form, and the two logouts.

RFC 6749 §4.1.2.1: while client_id or redirect_uri is wrong, nothing is trusted to receive a
redirect, so the user sees an error page; once both are right, every other error goes back to the
client as `redirect_uri?error=...&state=...`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import MultiMapping
from yarl import URL

from sidecar.dev.provider_claims import is_valid_s256_challenge, secrets_equal
from sidecar.dev.provider_pages import error_page, login_page, signed_out_page
from sidecar.dev.provider_state import CodeRecord, SignInSession
from sidecar.dev.users import DevUser

if TYPE_CHECKING:
    from sidecar.dev.provider import DevProvider, Route

# The Hosted UI's own cookie. Not "cognito" to stay apart from whatever runs on the same loopback host.
SESSION_COOKIE = "authsidecar_dev_idp"

# Authorization-request parameters the form carries through its hidden fields.
_CARRIED = (
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "identity_provider",
    "lang",
    "prompt",
)
_PROMPTS = frozenset({"none", "login", "consent", "select_account"})
# Errors a test may ask for with ?simulate_error=... (RFC 6749 §4.1.2.1 and OIDC Core §3.1.2.6).
SIMULATED_ERRORS = frozenset(
    {
        "access_denied",
        "server_error",
        "temporarily_unavailable",
        "login_required",
        "invalid_scope",
        "unauthorized_client",
        "invalid_request",
    }
)
# Compared against when the username is unknown, so both failures take the same path.
_NO_PASSWORD = "\x00unknown-user\x00"  # noqa: S105 - never matches a form value

Params = MultiMapping[Any]


class _PageError(Exception):
    """The redirect target is not trusted: answer with a 400 page."""


class _RedirectError(Exception):
    def __init__(self, redirect_uri: str, state: str | None, error: str, description: str) -> None:
        super().__init__(error)
        self.location = _with_query(redirect_uri, error=error, error_description=description, state=state)


_Fail = Callable[[str, str], _RedirectError]


@dataclass(frozen=True, slots=True)
class AuthRequest:
    redirect_uri: str
    state: str | None
    scope: str
    nonce: str | None
    code_challenge: str | None
    prompts: frozenset[str]
    lang: str
    login_hint: str
    carried: Mapping[str, str]


def _with_query(uri: str, **params: str | None) -> str:
    return str(URL(uri).extend_query({k: v for k, v in params.items() if v is not None}))


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def _single(params: Params, name: str) -> str | None:
    """RFC 6749 §3.1: parameters MUST NOT be included more than once."""
    values = [v for v in params.getall(name, []) if isinstance(v, str)]
    if len(values) > 1:
        raise ValueError(f"{name} was sent more than once")
    return values[0] if values else None


class BrowserEndpoints:
    def __init__(self, provider: DevProvider) -> None:
        self.p = provider
        self.config = provider.config

    def routes(self) -> list[Route]:
        return [
            ("GET", "/oauth2/authorize", "authorize", self.authorize),
            ("GET", "/login", "authorize", self.authorize),
            ("POST", "/oauth2/authorize", "login", self.login),
            ("POST", "/login", "login", self.login),
            ("GET", "/logout", "logout", self.logout),
            ("GET", "/oauth2/logout", "end_session", self.end_session),
        ]

    def parse(self, params: Params) -> AuthRequest:
        try:
            client_id = _single(params, "client_id")
            redirect_uri = _single(params, "redirect_uri")
        except ValueError as exc:
            raise _PageError(str(exc)) from None
        if client_id != self.config.client_id:
            raise _PageError("client_id is missing or is not a registered app client of this user pool")
        if redirect_uri is None or redirect_uri not in self.config.redirect_uris:
            raise _PageError("redirect_mismatch: redirect_uri is missing or not registered for this client")
        try:
            values = {name: _single(params, name) for name in (*_CARRIED, "login_hint")}
        except ValueError as exc:
            raise _RedirectError(redirect_uri, None, "invalid_request", str(exc)) from None
        state = values["state"]

        def fail(error: str, description: str) -> _RedirectError:
            return _RedirectError(redirect_uri, state, error, description)

        response_type = values["response_type"]
        if response_type is None:
            raise fail("invalid_request", "response_type is required")
        if response_type != "code":
            raise fail("unsupported_response_type", "only response_type=code is supported")
        scope = self._scope(values["scope"], fail)
        challenge = self._pkce(values["code_challenge"], values["code_challenge_method"], fail)
        prompts = frozenset((values["prompt"] or "").split())
        if not prompts <= _PROMPTS or ("none" in prompts and len(prompts) > 1):
            raise fail("invalid_request", "prompt must be none, or any of login, consent, select_account")
        return AuthRequest(
            redirect_uri=redirect_uri,
            state=state,
            scope=scope,
            nonce=values["nonce"],
            code_challenge=challenge,
            prompts=prompts,
            lang=values["lang"] or "en",
            login_hint=values["login_hint"] or "",
            carried={name: v for name in _CARRIED if (v := values[name]) is not None},
        )

    def _scope(self, requested: str | None, fail: _Fail) -> str:
        # Cognito: no scope asked for means every scope the app client allows.
        names = list(dict.fromkeys(requested.split())) if requested else list(self.config.allowed_scopes)
        unknown = [name for name in names if name not in self.config.allowed_scopes]
        if unknown or not names:
            raise fail("invalid_scope", f"scope not allowed for this client: {' '.join(unknown)}")
        return " ".join(names)

    def _pkce(self, challenge: str | None, method: str | None, fail: _Fail) -> str | None:
        if method is not None and method != "S256":
            raise fail("invalid_request", "code_challenge_method must be S256; plain is refused")
        if challenge is None:
            if method is not None:
                raise fail("invalid_request", "code_challenge_method was sent without code_challenge")
            if self.config.require_pkce:
                raise fail("invalid_request", "code_challenge is required: use PKCE with S256 (RFC 7636)")
            return None
        if method is None:
            # RFC 7636 §4.3 would default to "plain", which this provider refuses.
            raise fail("invalid_request", "code_challenge_method=S256 is required with code_challenge")
        if not is_valid_s256_challenge(challenge):
            raise fail("invalid_request", "code_challenge must be 43 base64url characters (RFC 7636 §4.2)")
        return challenge

    async def authorize(self, request: web.Request) -> web.Response:
        try:
            auth = self.parse(request.query)
            simulated = request.query.get("simulate_error")
            if simulated is not None:
                error = simulated if simulated in SIMULATED_ERRORS else "invalid_request"
                raise _RedirectError(auth.redirect_uri, auth.state, error, "simulated by the dev provider")
            session = None if "login" in auth.prompts else self._session(request)
            user = self.p.user(session.username) if session is not None else None
            if session is not None and user is not None:
                return self._complete(auth, user, session.auth_time, session.sid)
            if "none" in auth.prompts:
                raise _RedirectError(auth.redirect_uri, auth.state, "login_required", "no signed-in session")
        except _PageError as exc:
            return error_page(str(exc))
        except _RedirectError as exc:
            return _redirect(exc.location)
        return login_page(auth.carried, action="/login", username=auth.login_hint, lang=auth.lang)

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            auth = self.parse(form)
            if form.get("action") == "cancel":
                raise _RedirectError(auth.redirect_uri, auth.state, "access_denied", "the user cancelled")
        except _PageError as exc:
            return error_page(str(exc))
        except _RedirectError as exc:
            return _redirect(exc.location)
        username = form.get("username")
        password = form.get("password")
        username = username if isinstance(username, str) else ""
        password = password if isinstance(password, str) else ""
        user = self.p.user(username)
        matches = secrets_equal(password, user.password if user is not None else _NO_PASSWORD)
        if user is None or not matches:
            return login_page(
                auth.carried,
                action="/login",
                username=username,
                lang=auth.lang,
                error="Incorrect username or password.",
            )
        now = self.p.now()
        key = self.p.ledger.open_session(SignInSession(user.username, now, now + self.config.session_ttl))
        response = self._complete(auth, user, now, self.p.ledger.sessions[key].sid)
        response.set_cookie(
            SESSION_COOKIE,
            key,
            max_age=self.config.session_ttl,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=self.p.issuer.startswith("https://"),
        )
        return response

    def _session(self, request: web.Request) -> SignInSession | None:
        return self.p.ledger.session(request.cookies.get(SESSION_COOKIE), self.p.now())

    def _complete(self, auth: AuthRequest, user: DevUser, auth_time: int, sid: str) -> web.Response:
        now = self.p.now()
        record = CodeRecord(
            grant=self.p.new_grant(user, auth.scope, auth_time, sid=sid),
            redirect_uri=auth.redirect_uri,
            code_challenge=auth.code_challenge,
            nonce=auth.nonce,
            expires_at=now + self.config.code_ttl,
        )
        code = self.p.ledger.issue_code(record, now)
        return _redirect(_with_query(auth.redirect_uri, code=code, state=auth.state))

    async def logout(self, request: web.Request) -> web.Response:
        """Cognito's /logout: client_id + logout_uri (registered exactly) -> 302 logout_uri."""
        client_id = request.query.get("client_id")
        logout_uri = request.query.get("logout_uri")
        if client_id != self.config.client_id:
            return error_page("client_id is missing or is not a registered app client of this user pool")
        if logout_uri is None or logout_uri not in self.config.logout_uris:
            return error_page("logout_uri is missing or not a registered sign-out URL for this client")
        return await self._signed_out(request, _redirect(logout_uri))

    async def end_session(self, request: web.Request) -> web.Response:
        """OIDC RP-Initiated Logout 1.0 §2: id_token_hint, post_logout_redirect_uri, state, client_id."""
        query = request.query
        hint = query.get("id_token_hint")
        client_id = query.get("client_id")
        target = query.get("post_logout_redirect_uri")
        audience = None
        if hint is not None:
            # An expired hint is still a fine hint (§2); only its origin matters.
            claims = self.p.keys.verify(hint)
            if claims is None or claims.get("token_use") != "id" or claims.get("iss") != self.p.issuer:
                return error_page("id_token_hint is not an ID token issued by this provider")
            audience = claims.get("aud")
        for named in (client_id, audience):
            if named is not None and named != self.config.client_id:
                return error_page("client_id / id_token_hint audience is not a registered app client")
        if target is None:
            return await self._signed_out(request, signed_out_page())
        if hint is None and client_id is None:
            return error_page("post_logout_redirect_uri needs id_token_hint or client_id")
        if target not in self.config.logout_uris:
            return error_page("post_logout_redirect_uri is not a registered sign-out URL for this client")
        return await self._signed_out(request, _redirect(_with_query(target, state=query.get("state"))))

    async def _signed_out(self, request: web.Request, response: web.Response) -> web.Response:
        session = self._session(request)
        self.p.ledger.close_session(request.cookies.get(SESSION_COOKIE))
        response.del_cookie(SESSION_COOKIE, path="/")
        user = self.p.user(session.username) if session is not None else None
        if session is not None and user is not None:
            # The session is over: every registered client hears it server to server.
            await self.p.backchannel_logout(sid=session.sid, sub=user.sub)
        return response


def browser_routes(provider: DevProvider) -> list[Route]:
    return BrowserEndpoints(provider).routes()
