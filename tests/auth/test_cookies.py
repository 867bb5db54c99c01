from http.cookies import SimpleCookie

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from yarl import URL

from sidecar.auth.cookies import (
    CHUNK_LIMIT,
    EXPIRED,
    MAX_CHUNKS,
    CookieNames,
    CookiePolicy,
    CookieTooLarge,
    join,
    split,
    stale,
)
from sidecar.config import CookieSettings, CsrfSettings

KINDS = ["access", "id", "refresh", "xsrf", "tx"]


def policy(**cookie_settings):
    csrf = cookie_settings.pop("csrf", CsrfSettings())
    return CookiePolicy(CookieSettings(**cookie_settings), csrf)


def rendered(name, value, attrs):
    """The Set-Cookie line aiohttp itself writes for these attributes, as a dict of attributes."""
    response = web.Response()
    response.set_cookie(name, value, **attrs)
    morsel = response.cookies[name]
    line = morsel.OutputString()
    parts = [p.strip() for p in line.split(";")]
    assert parts[0] == f"{name}={morsel.coded_value}"
    out = {}
    for part in parts[1:]:
        key, _, val = part.partition("=")
        out[key.lower()] = val if _ else True
    return out


def browser_cookie_header(pairs):
    """What a browser sends back for these cookies, rendered by the stdlib the way aiohttp sets them."""
    jar = SimpleCookie()
    for name, value in pairs:
        jar[name] = value
    return "; ".join(f"{m.key}={m.coded_value}" for m in jar.values())


def request_cookies(header):
    return make_mocked_request("GET", "/", headers={"Cookie": header}).cookies


# --- names -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param({}, ("access_token", "id_token", "refresh_token", "XSRF-TOKEN", "authsidecar_tx"),
                     id="plain"),
        pytest.param({"host_prefix": True},
                     ("__Host-access_token", "__Host-id_token", "__Secure-refresh_token", "__Host-XSRF-TOKEN",
                      "__Host-authsidecar_tx"), id="host-prefix-refresh-on-auth-path-gets-secure-prefix"),
        pytest.param({"host_prefix": True, "refresh_token_path": "/"},
                     ("__Host-access_token", "__Host-id_token", "__Host-refresh_token", "__Host-XSRF-TOKEN",
                      "__Host-authsidecar_tx"), id="host-prefix-refresh-on-root-gets-host-prefix"),
        pytest.param({"host_prefix": True, "csrf": CsrfSettings(cookie="__Host-XSRF-TOKEN")},
                     ("__Host-access_token", "__Host-id_token", "__Secure-refresh_token", "__Host-XSRF-TOKEN",
                      "__Host-authsidecar_tx"), id="configured-prefix-not-doubled"),
        pytest.param({"csrf": CsrfSettings(cookie="csrf")},
                     ("access_token", "id_token", "refresh_token", "csrf", "authsidecar_tx"),
                     id="configured-csrf-cookie-name"),
    ],
)
def test_cookie_names_follow_host_prefix_setting(settings, expected):
    n = policy(**settings).names
    assert (n.access_token, n.id_token, n.refresh_token, n.xsrf, n.transaction) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("access_token", True, id="access"),
        pytest.param("id_token.3", True, id="id-chunk"),
        pytest.param("refresh_token", True, id="refresh"),
        pytest.param("XSRF-TOKEN", False, id="default-csrf-name-once-renamed"),
        pytest.param("authsidecar_tx", True, id="transaction"),
        pytest.param("__Host-access_token", True, id="host-prefixed"),
        pytest.param("__Host-id_token.0", True, id="host-prefixed-chunk"),
        pytest.param("__Secure-refresh_token", True, id="secure-prefixed"),
        pytest.param("__host-ACCESS_TOKEN", True, id="any-case"),
        pytest.param("my-csrf", True, id="configured-csrf-name"),
        pytest.param("session", False, id="app-cookie"),
        pytest.param("access_token2", False, id="longer-name"),
        pytest.param("my_access_token", False, id="name-as-suffix"),
        pytest.param("id_token.x", False, id="non-numeric-chunk"),
        pytest.param("id_token.", False, id="empty-chunk-index"),
        pytest.param("__Host-session", False, id="prefixed-app-cookie"),
        pytest.param("", False, id="empty"),
    ],
)
def test_is_sidecar_cookie_recognizes_every_sidecar_name_and_nothing_else(name, expected):
    names = CookieNames.build(CookieSettings(), CsrfSettings(cookie="my-csrf"))
    assert names.is_sidecar_cookie(name) is expected


# --- attributes --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kind", "path", "httponly", "samesite", "max_age"),
    [
        pytest.param("access", "/", True, "Lax", "100", id="access"),
        pytest.param("id", "/", True, "Lax", "100", id="id"),
        pytest.param("refresh", "/auth", True, "Lax", "2592000", id="refresh-only-under-auth"),
        pytest.param("xsrf", "/", False, "Lax", "2592000", id="xsrf-readable-by-javascript"),
        pytest.param("tx", "/", True, "Lax", "600", id="transaction"),
    ],
)
def test_default_attributes_per_kind_as_aiohttp_renders_them(kind, path, httponly, samesite, max_age):
    p = policy()
    attrs = rendered(p.name(kind), "v", p.attrs(kind, remaining=100 if kind in ("access", "id") else None))
    assert attrs["path"] == path
    assert attrs["samesite"] == samesite
    assert attrs["max-age"] == max_age
    assert attrs["secure"] is True
    assert attrs.get("httponly", False) is httponly
    assert "domain" not in attrs
    assert "expires" not in attrs


@pytest.mark.parametrize(
    ("remaining", "max_age"),
    [
        pytest.param(10, 10, id="token-expires-first"),
        pytest.param(10.9, 10, id="fraction-rounds-down"),
        pytest.param(3600, 3600, id="equal"),
        pytest.param(99999, 3600, id="configured-maximum-first"),
        pytest.param(-5, 0, id="already-expired"),
    ],
)
@pytest.mark.parametrize(
    ("kind", "maximum"),
    [("access", "access_token_max_age"), ("id", "refresh_token_max_age")],
    ids=["access", "id"],
)
def test_token_cookie_never_outlives_its_token(kind, maximum, remaining, max_age):
    assert policy(**{maximum: 3600}).attrs(kind, remaining=remaining)["max_age"] == max_age


def test_id_token_cookie_outlives_the_access_token_for_the_session():
    # /auth/refresh binds its CSRF check to the ID token's sub once the access token is gone.
    p = policy(access_token_max_age=3600, refresh_token_max_age=86400)
    assert p.attrs("id", remaining=86400)["max_age"] == 86400
    assert p.attrs("access", remaining=86400)["max_age"] == 3600


@pytest.mark.parametrize("kind", ["access", "id"])
def test_token_cookie_requires_the_remaining_lifetime(kind):
    with pytest.raises(ValueError, match="remaining lifetime"):
        policy().attrs(kind)


def test_remaining_lifetime_also_caps_the_refresh_cookie():
    assert policy().attrs("refresh", remaining=60)["max_age"] == 60


def test_domain_same_site_and_refresh_path_come_from_settings():
    p = policy(domain="example.test", same_site="strict", refresh_token_path="/auth/refresh")
    for kind in KINDS:
        assert p.attrs(kind, remaining=5)["domain"] == "example.test"
    assert p.attrs("access", remaining=5)["samesite"] == "Strict"
    assert p.attrs("refresh")["path"] == "/auth/refresh"


@pytest.mark.parametrize(
    ("same_site", "expected"),
    [pytest.param("strict", "Lax", id="strict-relaxed"), pytest.param("none", "None", id="none-kept"),
     pytest.param("lax", "Lax", id="lax-kept")],
)
def test_transaction_cookie_survives_the_cross_site_callback(same_site, expected):
    assert policy(same_site=same_site).attrs("tx")["samesite"] == expected


def test_insecure_dev_cookies_are_not_secure():
    attrs = rendered("access_token", "v", policy(secure=False).attrs("access", remaining=5))
    assert "secure" not in attrs


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"domain": "example.test", "csrf": CsrfSettings(cookie="__Host-XSRF")}, "no Domain",
                     id="host-name-with-domain"),
        pytest.param({"secure": False, "csrf": CsrfSettings(cookie="__Secure-XSRF")}, "secure",
                     id="secure-name-without-secure"),
    ],
)
def test_policy_refuses_a_prefixed_name_the_browser_would_drop(settings, message):
    with pytest.raises(ValueError, match=message):
        policy(**settings)


@pytest.mark.parametrize("kind", KINDS)
def test_clear_attributes_repeat_path_domain_and_secure_with_an_expiry_in_the_past(kind):
    p = policy(domain="example.test")
    set_attrs, clear = p.attrs(kind, remaining=5), p.clear_attrs(kind)
    assert clear["max_age"] == 0
    assert clear["expires"] == EXPIRED
    for key in ("path", "domain", "secure", "httponly", "samesite"):
        assert clear[key] == set_attrs[key]
    out = rendered(p.name(kind), "", clear)
    assert out["max-age"] == "0"
    assert out["expires"] == EXPIRED


async def test_clearing_removes_the_cookie_from_a_client_cookie_jar():
    p = policy(host_prefix=True)
    jar = aiohttp.CookieJar()
    url = URL("https://app.example.test/auth/refresh")
    for op in ("set", "clear"):
        response = web.Response()
        name = p.name("refresh")
        if op == "set":
            response.set_cookie(name, "rt", **p.attrs("refresh"))
        else:
            response.set_cookie(name, "", **p.clear_attrs("refresh"))
        jar.update_cookies(SimpleCookie(response.cookies[name].OutputString()), url)
        sent = {m.key for m in jar.filter_cookies(url).values()}
        assert (name in sent) is (op == "set")


# --- chunks ------------------------------------------------------------------------------------------

def token(size, alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_."):
    return "".join(alphabet[i % len(alphabet)] for i in range(size))


def test_a_value_that_fits_stays_one_cookie_under_its_own_name():
    assert split("id_token", "abc") == [("id_token", "abc")]


def test_the_limit_counts_name_equals_and_value():
    name = "id_token"
    exact = token(CHUNK_LIMIT - len(name) - 1)
    assert split(name, exact) == [(name, exact)]
    assert [n for n, _ in split(name, exact + "x")] == ["id_token.0", "id_token.1"]


@pytest.mark.parametrize("size", [5000, 9000, 20000], ids=["two-chunks", "three-chunks", "six-chunks"])
def test_a_long_value_becomes_numbered_chunks_each_within_the_limit(size):
    value = token(size)
    chunks = split("__Host-id_token", value)
    assert [n for n, _ in chunks] == [f"__Host-id_token.{i}" for i in range(len(chunks))]
    assert all(len(n) + 1 + len(v) <= CHUNK_LIMIT for n, v in chunks)
    assert "".join(v for _, v in chunks) == value


def test_a_quoted_value_is_measured_with_its_quotes():
    value = "1//" + token(5000)  # the shape of an opaque refresh token with slashes
    chunks = split("refresh_token", value, limit=1000)
    for name, chunk in chunks:
        assert len(name) + 1 + len(SimpleCookie().value_encode(chunk)[1]) <= 1000
    assert "".join(v for _, v in chunks) == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(token(300), id="plain-single"),
        pytest.param(token(9000), id="plain-chunked"),
        pytest.param("1//" + token(300), id="quoted-single"),
        pytest.param("1//" + token(9000), id="quoted-chunked"),
    ],
)
def test_split_then_browser_round_trip_then_join_gives_the_value_back(value):
    pairs = split("__Host-id_token", value)
    # Render each cookie exactly as aiohttp would set it, send them back as a browser does.
    cookies = request_cookies(browser_cookie_header(pairs) + "; session=app")
    assert join(cookies, "__Host-id_token") == value


def test_split_refuses_more_than_max_chunks():
    with pytest.raises(CookieTooLarge):
        split("id_token", token(CHUNK_LIMIT * MAX_CHUNKS))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param('a"b', id="double-quote"),
        pytest.param("a;b", id="semicolon"),
        pytest.param("a,b", id="comma"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("a\nb", id="newline"),
        pytest.param("caf\u00e9", id="latin-1"),
        pytest.param("\u20ac", id="non-latin-1"),
    ],
)
def test_split_refuses_values_that_would_need_escaping(value):
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError; the message is for operators
        split("id_token", value)


@pytest.mark.parametrize(
    ("cookies", "expected"),
    [
        pytest.param({"t": "abc"}, "abc", id="single"),
        pytest.param({"t.0": "ab", "t.1": "cd", "t.2": "e"}, "abcde", id="chunks"),
        pytest.param({"t.1": "cd", "t.0": "ab"}, "abcd", id="chunks-any-order"),
        pytest.param({"t": "abc", "other": "x", "t2": "y", "tt.0": "z"}, "abc", id="neighbours-ignored"),
        pytest.param({}, None, id="absent"),
        pytest.param({"t": ""}, None, id="empty-single"),
        pytest.param({"t.0": "ab", "t.2": "e"}, None, id="gap"),
        pytest.param({"t.1": "cd"}, None, id="first-missing"),
        pytest.param({"t.0": "ab", "t.1": ""}, None, id="empty-chunk"),
        pytest.param({"t": "abc", "t.0": "ab"}, None, id="plain-beside-chunks"),
        pytest.param({f"t.{i}": "x" for i in range(MAX_CHUNKS + 1)}, None, id="more-than-max-chunks"),
        pytest.param({"t.0": "a", "t.99": "b"}, None, id="index-far-out-of-range"),
        pytest.param({"t.0": "a", "t.01": "b"}, None, id="non-canonical-index"),
        pytest.param({"t.0": "a", "t." + "9" * 5000: "b"}, None, id="absurdly-long-index"),
        pytest.param({"t.x": "a"}, None, id="non-numeric-suffix-is-not-a-chunk"),
    ],
)
def test_join_reassembles_only_a_consistent_set(cookies, expected):
    assert join(cookies, "t") == expected


@pytest.mark.parametrize(
    ("present", "new_count", "expected"),
    [
        pytest.param(["t.0", "t.1", "t.2"], 2, ["t.2"], id="fewer-chunks"),
        pytest.param(["t.0", "t.1"], 1, ["t.0", "t.1"], id="chunks-to-single"),
        pytest.param(["t"], 2, ["t"], id="single-to-chunks"),
        pytest.param(["t"], 1, [], id="single-to-single"),
        pytest.param(["t.0", "t.1"], 3, [], id="more-chunks"),
        pytest.param(["t", "t.1", "t.0", "t.10", "session"], 0, ["t", "t.0", "t.1", "t.10"], id="remove-all"),
        pytest.param(["t.01", "t.0"], 1, ["t.0", "t.01"], id="non-canonical-cleared-too"),
        pytest.param(["tt", "t2", "t.x"], 0, [], id="neighbours-untouched"),
        pytest.param([], 2, [], id="nothing-present"),
    ],
)
def test_stale_names_what_the_new_value_will_not_overwrite(present, new_count, expected):
    assert stale("t", present, new_count) == expected


def test_stale_refuses_a_negative_count():
    with pytest.raises(ValueError, match="negative"):
        stale("t", [], -1)


@pytest.mark.parametrize(
    ("cookie_domain", "csrf_domain", "token_domain", "xsrf_domain"),
    [
        pytest.param(None, None, None, None, id="host-only"),
        pytest.param("example.com", None, "example.com", "example.com", id="shared-cookies"),
        pytest.param(None, "example.com", None, "example.com", id="only-the-csrf-cookie-shared"),
    ],
)
def test_the_csrf_cookie_can_be_shared_while_token_cookies_stay_host_only(
    cookie_domain, csrf_domain, token_domain, xsrf_domain
):
    policy = CookiePolicy(CookieSettings(domain=cookie_domain),
                          CsrfSettings(cookie_domain=csrf_domain))
    for kind in ("access", "id", "refresh", "tx"):
        assert policy.attrs(kind, remaining=60).get("domain") == token_domain, kind
    assert policy.attrs("xsrf").get("domain") == xsrf_domain
    assert policy.clear_attrs("xsrf").get("domain") == xsrf_domain
