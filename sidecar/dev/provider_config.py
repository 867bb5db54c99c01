"""The dev provider's configuration: one app client of one user pool."""

from __future__ import annotations

from dataclasses import dataclass, field

from yarl import URL

from sidecar.dev.users import DEFAULT_USERS, DevUser

# What the Hosted UI lets a client ask for; a scope outside this list is refused (invalid_scope).
COGNITO_SCOPES = ("openid", "email", "phone", "profile", "aws.cognito.signin.user.admin")
DAY = 24 * 3600


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One app client of one user pool. Every URI list is matched exactly, as Cognito does."""

    client_id: str = "authsidecar-dev"
    # None: a public client. Set: /oauth2/token and /oauth2/revoke demand client_secret_basic or _post.
    client_secret: str | None = field(default=None, repr=False)
    redirect_uris: tuple[str, ...] = (
        "http://127.0.0.1:8080/auth/callback",
        "http://localhost:8080/auth/callback",
    )
    logout_uris: tuple[str, ...] = ("http://127.0.0.1:8080/", "http://localhost:8080/")
    users: tuple[DevUser, ...] = DEFAULT_USERS
    allowed_scopes: tuple[str, ...] = COGNITO_SCOPES
    access_ttl: int = 3600
    id_ttl: int = 3600
    refresh_ttl: int = 30 * DAY
    rotate_refresh_tokens: bool = False
    # With rotation: seconds a rotated-out refresh token still works (Cognito's
    # RetryGracePeriodSeconds, 0-60); a later reuse revokes the whole family (reuse detection).
    refresh_reuse_grace: float = 0.0
    code_ttl: int = 300
    # Cognito accepts requests without PKCE; this fake refuses them unless told otherwise.
    require_pkce: bool = True
    # The Hosted UI's own sign-in session (lets a second /authorize skip the form).
    session_ttl: int = 3600
    # OIDC Back-Channel Logout 1.0: where a logout token is POSTed when a sign-in session ends.
    backchannel_logout_uris: tuple[str, ...] = ()
    dev_routes: bool = False

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be positive"
            for name in ("access_ttl", "id_ttl", "refresh_ttl", "code_ttl", "session_ttl")
            if getattr(self, name) <= 0
        ]
        if not self.client_id:
            problems.append("client_id must not be empty")
        names = [user.username for user in self.users]
        if len(set(names)) != len(names):
            problems.append("users: usernames must be unique")
        for uri in (*self.redirect_uris, *self.logout_uris, *self.backchannel_logout_uris):
            if not URL(uri).absolute:
                problems.append(f"redirect_uris/logout_uris: {uri!r} is not an absolute URL")
        if problems:
            raise ValueError("; ".join(problems))
