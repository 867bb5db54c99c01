"""HeaderPolicy and response_headers as pure functions: tables of inputs and the headers that result."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.auth.cookies import CookieNames
from sidecar.auth.session import CookieCache
from sidecar.config import CookieSettings, CsrfSettings, IdentityHeaderSettings
from sidecar.identity import Identity
from sidecar.proxy.headers import HeaderPolicy, response_headers
from tests.proxy.conftest import ALICE

FORWARDING = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host")
SETTINGS = IdentityHeaderSettings(claims={"tenant": "X-Tenant"}, strip=("X-Legacy-User",))
TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
# The sidecar's cookie names under the default settings: the one list the app-bound Cookie uses.
NAMES = CookieNames.build(CookieSettings(), CsrfSettings())


def make_policy(settings: IdentityHeaderSettings = SETTINGS, trusted: Sequence[Any] = ()) -> HeaderPolicy:
    return HeaderPolicy(settings, tuple(trusted), cookie_filter=CookieCache(NAMES.pattern.match).for_app)


def build(
    incoming: Sequence[tuple[str, str]],
    *,
    policy: HeaderPolicy | None = None,
    peer: str | None = "203.0.113.9",
    identity: Identity | None = None,
    access_token: str | None = None,
) -> CIMultiDict[str]:
    policy = policy or make_policy(SETTINGS, TRUSTED)
    return policy.upstream_headers(
        CIMultiDictProxy(CIMultiDict(incoming)),
        peer=peer,
        scheme="https",
        host="app.example.com",
        identity=identity,
        access_token=access_token,
        request_id="rid-1",
    )


def identity(**changes: Any) -> Identity:
    fields = {
        "sub": ALICE.sub, "username": ALICE.username, "email": ALICE.email, "groups": ALICE.groups,
        "scopes": ALICE.scopes, "expires_at": ALICE.expires_at, "claims": ALICE.claims,
    }
    return Identity(**{**fields, **changes})


SPOOFED = [
    "X-User-Id", "x-user-id", "X_User_Id", "X-USER-EMAIL", "x_user_groups", "X-User-Anything",
    "X-Auth-Request-Email", "X_Auth_Request_User", "X-Auth-Request-Access-Token",
    "X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Groups", "X-Forwarded-Access-Token",
    "X_Forwarded_Preferred_Username", "X-Tenant", "x_tenant", "X-Legacy-User", "X_LEGACY_USER",
]


@pytest.mark.parametrize("who", [None, ALICE], ids=["anonymous", "alice"])
@pytest.mark.parametrize("name", SPOOFED, ids=SPOOFED)
def test_client_sent_identity_headers_never_reach_the_app(name: str, who: Identity | None) -> None:
    out = build([(name, "spoofed"), ("Accept", "*/*")], identity=who)
    assert "spoofed" not in out.values()
    assert out["Accept"] == "*/*"


TRUSTED_PEERS = ["10.1.2.3", "fd00::7", "::ffff:10.1.2.3"]
# oauth2-proxy's names and every prefix family, in the spellings a client may choose.
SPOOFED_BEHIND_PROXY = [
    *SPOOFED,
    "x-forwarded-user", "X-FORWARDED-EMAIL", "x-Forwarded-Groups", "X_Forwarded_Access_Token",
    "X-Forwarded-Preferred-Username", "x-forwarded-preferred-username",
    "X-USER-ID", "x-User-Email", "X_user_Groups", "X-AUTH-REQUEST-USER", "x-Auth-Request-Email",
    "x_auth_request_preferred_username",
]


@pytest.mark.parametrize("who", [None, ALICE], ids=["anonymous", "alice"])
@pytest.mark.parametrize("peer", TRUSTED_PEERS, ids=["ipv4", "ipv6", "ipv4-mapped"])
@pytest.mark.parametrize("name", SPOOFED_BEHIND_PROXY, ids=SPOOFED_BEHIND_PROXY)
def test_identity_headers_never_reach_the_app_even_from_a_trusted_proxy(
    name: str, peer: str, who: Identity | None
) -> None:
    # A trusted proxy is believed about where the client is (X-Forwarded-*), never about who it is.
    out = build([(name, "spoofed"), ("X-Forwarded-For", "198.51.100.7")], peer=peer, identity=who)
    assert "spoofed" not in out.values()
    assert out["X-Forwarded-For"] == f"198.51.100.7, {peer}"


def test_other_x_forwarded_headers_from_a_trusted_proxy_pass() -> None:
    # The contrast that makes the test above meaningful: a trusted peer's X-Forwarded-* do pass.
    out = build([("X-Forwarded-Port", "443"), ("X-Forwarded-Prefix", "/app")], peer="10.1.2.3")
    assert out["X-Forwarded-Port"] == "443"
    assert out["X-Forwarded-Prefix"] == "/app"


@pytest.mark.parametrize("name", ["Remote-User", "remote_user", "REMOTE-USER"])
def test_a_configured_mapping_name_is_stripped_in_every_spelling(name: str) -> None:
    policy = make_policy(IdentityHeaderSettings(user_id="Remote-User"))
    out = build([(name, "spoofed")], policy=policy, identity=ALICE)
    assert out.getall("Remote-User") == ["user-123"]


@pytest.mark.parametrize("name", ["X-Username", "X-Users-Count", "X-Userland", "X-Custom", "My_Header"])
def test_look_alike_but_unrelated_headers_pass(name: str) -> None:
    assert build([(name, "v")]).getall(name) == ["v"]


def test_identity_headers_are_set_from_the_identity() -> None:
    out = build([], identity=ALICE)
    assert out["X-User-Id"] == "user-123"
    assert out["X-User-Email"] == "alice@example.com"
    assert out["X-User-Groups"] == "admins,ops"
    assert out["X-User-Name"] == "alice"
    assert out["X-Tenant"] == "acme"


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        ("acme", "acme"),
        (["a", "b"], "a,b"),
        (3, "3"),
        (True, "true"),
        ({"id": 7, "a": [1]}, '{"a":[1],"id":7}'),
        ([1, "x", None], "1,x"),
        (None, None),
        ("", None),
    ],
    ids=["string", "list", "int", "bool", "object", "mixed-list", "null", "empty"],
)
def test_extra_claims_render_as_header_values(claim: Any, expected: str | None) -> None:
    out = build([], identity=identity(claims={"tenant": claim}))
    assert out.get("X-Tenant") == expected


def test_a_missing_claim_or_empty_field_sends_no_header() -> None:
    out = build([], identity=identity(claims={}, email=None, groups=(), username=None))
    assert set(out) >= {"X-User-Id"}
    assert not {"X-Tenant", "X-User-Email", "X-User-Groups", "X-User-Name"} & set(out)


@pytest.mark.parametrize(
    "evil",
    ["a\r\nX-Admin: yes", "a\nX-Admin: yes", "a\rX-Admin: yes", "a\x00X-Admin: yes", "a\x7f\x1bX-Admin: yes"],
    ids=["crlf", "lf", "cr", "nul", "del-esc"],
)
def test_claim_values_cannot_inject_headers(evil: str) -> None:
    who = identity(sub=evil, email=evil, username=evil, groups=(evil,), claims={"tenant": evil})
    out = build([], identity=who)
    assert "X-Admin" not in out
    for name in ("X-User-Id", "X-User-Email", "X-User-Name", "X-User-Groups", "X-Tenant"):
        assert out[name] == "aX-Admin: yes"


def test_a_printable_unicode_value_is_passed_unchanged() -> None:
    assert build([], identity=identity(username="Zoë Ünïcode"))["X-User-Name"] == "Zoë Ünïcode"


@pytest.mark.parametrize(
    ("who", "forward", "incoming", "expected"),
    [
        (ALICE, False, "Bearer abc", None),
        (ALICE, False, "bearer abc", None),
        (ALICE, False, "Basic dXNlcjpwYXNz", "Basic dXNlcjpwYXNz"),
        (ALICE, True, "Bearer abc", "Bearer tok"),
        (ALICE, True, None, "Bearer tok"),
        (None, False, "Bearer abc", "Bearer abc"),
        (None, True, "Bearer abc", "Bearer abc"),
        (ALICE, False, None, None),
    ],
    ids=[
        "consumed-bearer", "consumed-bearer-lowercase", "basic-passes", "forwarded-token-replaces",
        "forwarded-token-added", "anonymous-untouched", "anonymous-untouched-forwarding", "none",
    ],
)
def test_authorization(
    who: Identity | None, forward: bool, incoming: str | None, expected: str | None
) -> None:
    policy = make_policy(IdentityHeaderSettings(forward_access_token=forward))
    headers = [("Authorization", incoming)] if incoming else []
    out = build(headers, policy=policy, identity=who, access_token="tok")
    assert out.getall("Authorization", []) == ([expected] if expected else [])


def test_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    out = build(
        [
            ("Host", "app.example.com"),
            ("Connection", "keep-alive, X-Custom-Hop"),
            ("X-Custom-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Expect", "100-continue"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Extensions", "permessage-deflate"),
            ("Content-Length", "42"),
            ("Content-Type", "text/plain"),
        ]
    )
    assert sorted(out) == sorted(
        ["Content-Length", "Content-Type", *FORWARDING, "X-Request-Id"]
    )
    assert out["Content-Length"] == "42"


@pytest.mark.parametrize(
    "name",
    ["Content_Length", "Transfer_Encoding", "X_Forwarded_For", "X_Forwarded_Host", "X_Request_Id"],
)
def test_underscored_spellings_of_managed_headers_are_dropped(name: str) -> None:
    assert "evil" not in build([(name, "evil")]).values()


@pytest.mark.parametrize(
    "name",
    ["X-Original-URL", "X-Rewrite-URL", "X-HTTP-Method-Override", "X-Method-Override", "X-Request-Id"],
)
def test_routing_override_headers_are_dropped(name: str) -> None:
    assert "/admin" not in build([(name, "/admin")]).values()


def test_the_request_id_is_the_sidecars() -> None:
    assert build([("X-Request-Id", "client-chosen")]).getall("X-Request-Id") == ["rid-1"]


SAME = "<unchanged>"
SIDECAR_COOKIES = [
    ("a=1; access_token=xyz; b=2", "a=1; b=2"),
    ("access_token=xyz", None),
    ("__Host-access_token.0=x; __Host-access_token.1=y; theme=dark", "theme=dark"),
    ("id_token=i; refresh_token=r; refresh_token.12=r2; authsidecar_tx=t; __Host-authsidecar_tx=t", None),
    ('a="quoted; value"; b=%20x; c=; access_token=t; d=e=f', 'a="quoted; value"; b=%20x; c=; d=e=f'),
    ("my_access_token=1; access_token2=1; access_token.x=1; Xaccess_token=1", SAME),
    # Any case and prefix spelling of a sidecar cookie is the sidecar's (browsers may send both).
    ("__host-access_token=1; Access_Token=1; __Secure-refresh_token=r; keep=1", "keep=1"),
    ("session=s3cr3t; XSRF-TOKEN=abc", "session=s3cr3t"),
    ('x="a\\"b"; y=%E2%82%AC', SAME),
]


@pytest.mark.parametrize(
    ("raw", "expected"),
    SIDECAR_COOKIES,
    ids=["middle", "only", "host-prefixed-chunks", "all-kinds", "byte-exact-rest", "look-alikes",
         "case-and-prefix", "csrf-cookie", "escaped-quote"],
)
def test_sidecar_cookies_are_removed_and_the_rest_is_byte_exact(raw: str, expected: str | None) -> None:
    policy = make_policy(SETTINGS)
    want = [raw] if expected is SAME else [expected] if expected else []
    for _ in range(2):  # the second call is served from the cache
        assert build([("Cookie", raw)], policy=policy).getall("Cookie", []) == want


def test_several_cookie_headers_are_joined_then_filtered() -> None:
    out = build([("Cookie", "a=1; access_token=x"), ("Cookie", "b=2")])
    assert out.getall("Cookie") == ["a=1; b=2"]


@pytest.mark.parametrize(
    ("peer", "incoming", "expected"),
    [
        (
            "203.0.113.9",
            [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", "evil")],
            dict(zip(FORWARDING, ("203.0.113.9", "https", "app.example.com"), strict=True)),
        ),
        (
            "10.0.0.5",
            [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "5.6.7.8"), ("X-Forwarded-Proto", "http"),
             ("X-Forwarded-Host", "public.example.com")],
            {"X-Forwarded-For": "1.2.3.4, 5.6.7.8, 10.0.0.5", "X-Forwarded-Proto": "http",
             "X-Forwarded-Host": "public.example.com"},
        ),
        (
            "10.0.0.5",
            [],
            dict(zip(FORWARDING, ("10.0.0.5", "https", "app.example.com"), strict=True)),
        ),
        (
            "::ffff:10.1.1.1",
            [("X-Forwarded-For", "1.2.3.4")],
            {"X-Forwarded-For": "1.2.3.4, ::ffff:10.1.1.1"},
        ),
        ("fd00::1", [("X-Forwarded-For", "1.2.3.4")], {"X-Forwarded-For": "1.2.3.4, fd00::1"}),
        ("fe80::1", [("X-Forwarded-For", "1.2.3.4")], {"X-Forwarded-For": "fe80::1"}),
    ],
    ids=["untrusted-rebuilt", "trusted-appended", "trusted-without-chain", "ipv4-mapped", "ipv6-trusted",
         "ipv6-untrusted"],
)
def test_x_forwarded_headers(peer: str, incoming: list[tuple[str, str]], expected: dict[str, str]) -> None:
    out = build(incoming, peer=peer)
    for name, value in expected.items():
        assert out.getall(name) == [value]


@pytest.mark.parametrize(
    ("peer", "kept"),
    [("203.0.113.9", False), ("10.0.0.5", True)],
    ids=["untrusted", "trusted"],
)
def test_other_forwarding_headers_only_from_trusted_proxies(peer: str, kept: bool) -> None:
    incoming = [("Forwarded", "for=1.2.3.4"), ("X-Real-IP", "1.2.3.4"), ("X-Forwarded-Port", "443")]
    out = build(incoming, peer=peer)
    assert [name in out for name, _ in incoming] == [kept] * len(incoming)


def test_no_peer_means_no_x_forwarded_for() -> None:
    out = build([("X-Forwarded-For", "1.2.3.4")], peer=None)
    assert "X-Forwarded-For" not in out


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),
        ("10.0.0.5", "1.2.3.4", "1.2.3.4"),
        ("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.9.9.9", "1.2.3.4"),
        ("10.0.0.5", "10.1.1.1, 10.2.2.2", "10.1.1.1"),
        ("10.0.0.5", None, "10.0.0.5"),
        ("10.0.0.5", " , ", "10.0.0.5"),
        ("10.0.0.5", "not-an-ip", "not-an-ip"),
        (None, "1.2.3.4", "unknown"),
    ],
    ids=["untrusted-peer", "one-hop", "rightmost-untrusted", "all-trusted", "no-header", "empty-entries",
         "garbage", "no-peer"],
)
def test_client_ip(peer: str | None, xff: str | None, expected: str) -> None:
    policy = make_policy(SETTINGS, TRUSTED)
    headers = CIMultiDictProxy(CIMultiDict([("X-Forwarded-For", xff)] if xff is not None else []))
    assert policy.client_ip(headers, peer) == expected


def test_without_trusted_proxies_nobody_is_trusted() -> None:
    policy = make_policy(SETTINGS)
    out = build([("X-Forwarded-For", "1.2.3.4")], policy=policy, peer="10.0.0.5")
    assert out["X-Forwarded-For"] == "10.0.0.5"


def test_response_headers_drop_hop_by_hop_and_keep_the_rest() -> None:
    upstream = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Connection", "keep-alive, X-Hop"),
                ("X-Hop", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Transfer-Encoding", "chunked"),
                ("Proxy-Authenticate", "Basic"),
                ("Upgrade", "h2c"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("Content-Encoding", "gzip"),
                ("Content-Length", "10"),
                ("X-App", "kept"),
            ]
        )
    )
    out = response_headers(upstream)
    assert list(out.items()) == [
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Content-Encoding", "gzip"),
        ("Content-Length", "10"),
        ("X-App", "kept"),
    ]
