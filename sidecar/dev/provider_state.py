"""Everything the dev provider remembers: codes, token families, refresh tokens, sign-in sessions.

A *family* is one sign-in event and every token minted from it; Cognito names it `origin_jti`.
Revoking a refresh token revokes its family (Cognito's /oauth2/revoke), and so does replaying a code
(RFC 6749 §4.1.2: "SHOULD revoke (when possible) all tokens previously issued based on that code").
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field

from sidecar.dev.provider_claims import Grant

# Redeemed and expired codes are remembered this long past expiry, so a replay is still recognised.
_CODE_MEMORY = 600.0


class OAuthError(Exception):
    """An RFC 6749 §5.2 error answer: JSON {"error", "error_description"} with `status`."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


class InvalidToken(Exception):
    """An access token the provider will not honour; the message is Cognito's wording."""


@dataclass(slots=True)
class CodeRecord:
    grant: Grant
    redirect_uri: str
    code_challenge: str | None
    nonce: str | None
    expires_at: float
    redeemed: bool = False


@dataclass(slots=True)
class Family:
    grant: Grant
    refresh_token: str | None
    refresh_expires_at: float
    # Latest expiry of anything minted from this family; after it (and the refresh token) it can go.
    last_exp: float = 0.0
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class SignInSession:
    """The provider's own session (the Hosted UI's cookie): lets a second /authorize skip the form."""

    username: str
    auth_time: int
    expires_at: float
    # The session's public id, in its ID tokens and logout tokens (never the cookie's value).
    sid: str = ""


@dataclass(slots=True)
class Ledger:
    codes: dict[str, CodeRecord] = field(default_factory=dict)
    families: dict[str, Family] = field(default_factory=dict)
    refresh_index: dict[str, str] = field(default_factory=dict)  # refresh token -> origin_jti
    # Rotated-out refresh tokens -> (origin_jti, when they were rotated out): reuse detection.
    retired: dict[str, tuple[str, float]] = field(default_factory=dict)
    sessions: dict[str, SignInSession] = field(default_factory=dict)

    # -- authorization codes -------------------------------------------------------------------

    def issue_code(self, record: CodeRecord, now: float) -> str:
        self._forget_stale(now)
        code = secrets.token_urlsafe(32)
        self.codes[code] = record
        return code

    def redeem_code(self, code: str, client_id: str, redirect_uri: str, now: float) -> CodeRecord:
        """Burn the code on any attempt by the right client; PKCE is checked by the caller afterwards."""
        record = self.codes.get(code)
        if record is None or record.grant.client_id != client_id:
            raise OAuthError("invalid_grant", "authorization code is unknown")
        if record.redeemed:
            # RFC 6749 §4.1.2: a replayed code revokes what it already produced.
            self.revoke_family(record.grant.origin_jti)
            raise OAuthError("invalid_grant", "authorization code was already used")
        record.redeemed = True
        if now >= record.expires_at:
            raise OAuthError("invalid_grant", "authorization code has expired")
        if redirect_uri != record.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        return record

    # -- token families ------------------------------------------------------------------------

    def open_family(self, grant: Grant, *, refresh_ttl: float | None, now: float) -> Family:
        """A family for `grant`; with refresh_ttl, it also gets an opaque refresh token."""
        refresh_token = secrets.token_urlsafe(48) if refresh_ttl is not None else None
        family = Family(
            grant=grant,
            refresh_token=refresh_token,
            refresh_expires_at=now + (refresh_ttl or 0.0),
        )
        self.families[grant.origin_jti] = family
        if refresh_token is not None:
            self.refresh_index[refresh_token] = grant.origin_jti
        return family

    def family_of_refresh(self, refresh_token: str, client_id: str, now: float, *,
                          reuse_grace: float | None = None) -> Family:
        """The live family of ``refresh_token``.

        ``reuse_grace``: with rotation, a rotated-out token used again within that many seconds is
        still served (Cognito's ``RetryGracePeriodSeconds``); after it, the reuse is taken as theft
        and the whole family is revoked (Okta, Auth0, Keycloak, oidc-provider; OAuth 2.0 Security
        BCP §4.14.2). None: no reuse detection, the old token is simply unknown.
        """
        origin = self.refresh_index.get(refresh_token)
        if origin is None and reuse_grace is not None and refresh_token in self.retired:
            origin, retired_at = self.retired[refresh_token]
            if now - retired_at >= reuse_grace:
                self.revoke_family(origin)
                raise OAuthError("invalid_grant", "Refresh Token has been revoked (reused)")
        family = self.families.get(origin) if origin is not None else None
        if family is None or family.revoked or family.grant.client_id != client_id:
            raise OAuthError("invalid_grant", "Invalid Refresh Token")
        if now >= family.refresh_expires_at:
            raise OAuthError("invalid_grant", "Refresh Token has expired")
        return family

    def rotate_refresh(self, family: Family, now: float = 0.0) -> str:
        """Swap the family's refresh token for a new one; the old one stops working at once."""
        if family.refresh_token is not None:
            self.refresh_index.pop(family.refresh_token, None)
            self.retired[family.refresh_token] = (family.grant.origin_jti, now)
        family.refresh_token = secrets.token_urlsafe(48)
        self.refresh_index[family.refresh_token] = family.grant.origin_jti
        return family.refresh_token

    def revoke_family(self, origin_jti: str) -> None:
        family = self.families.get(origin_jti)
        if family is None:
            return
        family.revoked = True
        if family.refresh_token is not None:
            self.refresh_index.pop(family.refresh_token, None)

    def revoke_user(self, username: str) -> int:
        """GlobalSignOut: every family of the user. Returns how many were still live."""
        live = [o for o, f in self.families.items() if f.grant.user.username == username and not f.revoked]
        for origin in live:
            self.revoke_family(origin)
        return len(live)

    def is_live(self, origin_jti: object) -> bool:
        family = self.families.get(origin_jti) if isinstance(origin_jti, str) else None
        return family is not None and not family.revoked

    # -- the provider's own sign-in session -----------------------------------------------------

    def open_session(self, session: SignInSession) -> str:
        """Remember ``session`` (given a public ``sid``); returns the cookie's value."""
        key = secrets.token_urlsafe(32)
        self.sessions[key] = dataclasses.replace(session, sid=session.sid or secrets.token_urlsafe(16))
        return key

    def session(self, sid: str | None, now: float) -> SignInSession | None:
        found = self.sessions.get(sid) if sid else None
        if found is None or now >= found.expires_at:
            return None
        return found

    def close_session(self, sid: str | None) -> None:
        if sid:
            self.sessions.pop(sid, None)

    # -- housekeeping: a dev server may run for days -------------------------------------------

    def _forget_stale(self, now: float) -> None:
        for code in [c for c, r in self.codes.items() if now > r.expires_at + _CODE_MEMORY]:
            del self.codes[code]
        for sid in [s for s, v in self.sessions.items() if now >= v.expires_at]:
            del self.sessions[sid]
        stale = [o for o, f in self.families.items() if now > max(f.refresh_expires_at, f.last_exp)]
        gone = set(stale)
        for token in [t for t, (o, _at) in self.retired.items() if o in gone]:
            del self.retired[token]
        for origin in stale:
            family = self.families.pop(origin)
            if family.refresh_token is not None:
                self.refresh_index.pop(family.refresh_token, None)
