import pytest

from sidecar.auth.return_to import MAX_LENGTH, ReturnToPolicy, origin_of

APP_URL = "https://app.example.test/spa/"
APP = "https://app.example.test"
POLICY = ReturnToPolicy(APP_URL, ["https://admin.example.test", "http://localhost:5173"])

ACCEPTED = [
    pytest.param("/", f"{APP}/", id="root"),
    pytest.param("/orders/7?tab=2#top", f"{APP}/orders/7?tab=2#top", id="path-query-fragment"),
    pytest.param("/a%20b", f"{APP}/a%20b", id="encoded-space-in-path"),
    pytest.param("/%E2%9C%93", f"{APP}/%E2%9C%93", id="encoded-utf8-in-path"),
    pytest.param("/search?q=//evil.test", f"{APP}/search?q=//evil.test", id="slashes-in-query-only"),
    pytest.param("/go?next=https://evil.test", f"{APP}/go?next=https://evil.test", id="url-in-query-only"),
    pytest.param("/x#//evil.test", f"{APP}/x#//evil.test", id="slashes-in-fragment-only"),
    pytest.param("/%2e%2e/x", f"{APP}/%2e%2e/x", id="dot-segments-stay-on-app-origin"),
    pytest.param("/" + "a" * (MAX_LENGTH - 1), f"{APP}/" + "a" * (MAX_LENGTH - 1), id="exactly-max-length"),
    pytest.param(f"{APP}/x?y=1#z", f"{APP}/x?y=1#z", id="absolute-app-origin"),
    pytest.param(APP, f"{APP}/", id="absolute-app-origin-no-path"),
    pytest.param(f"{APP}?q=1", f"{APP}/?q=1", id="absolute-app-origin-query-only"),
    pytest.param("HTTPS://APP.EXAMPLE.TEST/Orders", f"{APP}/Orders", id="upper-case-scheme-and-host"),
    pytest.param(f"{APP}:443/x", f"{APP}/x", id="explicit-default-port"),
    pytest.param("https://admin.example.test/users?id=3", "https://admin.example.test/users?id=3",
                 id="allowed-origin-path-kept"),
    pytest.param("http://localhost:5173/dev", "http://localhost:5173/dev", id="allowed-origin-with-port"),
]

REFUSED = [
    pytest.param(None, id="missing"),
    pytest.param("", id="empty"),
    pytest.param("//evil.test", id="protocol-relative"),
    pytest.param("///evil.test", id="triple-slash"),
    pytest.param("////evil.test", id="quadruple-slash"),
    pytest.param("https:evil.test", id="scheme-without-slashes"),
    pytest.param("https:/evil.test", id="scheme-one-slash"),
    pytest.param("https:///app.example.test/", id="scheme-three-slashes"),
    pytest.param("/\\evil.test", id="slash-backslash"),
    pytest.param("\\\\evil.test", id="double-backslash"),
    pytest.param("/\\/evil.test", id="slash-backslash-slash"),
    pytest.param("/x\\y", id="backslash-anywhere"),
    pytest.param("https:\\\\evil.test", id="scheme-backslashes"),
    pytest.param("/%2F/evil.test", id="encoded-second-slash"),
    pytest.param("/%2F%2Fevil.test", id="encoded-double-slash"),
    pytest.param("/%2f%2fevil.test", id="encoded-double-slash-lower-case"),
    pytest.param("%2F%2Fevil.test", id="fully-encoded-protocol-relative"),
    pytest.param("/%5Cevil.test", id="encoded-backslash"),
    pytest.param("/%252F%252Fevil.test", id="double-encoded-double-slash"),
    pytest.param("/%25252525252Fx", id="encoded-too-deep"),
    pytest.param("/\t/evil.test", id="raw-tab-between-slashes"),
    pytest.param("/\n/evil.test", id="raw-newline-between-slashes"),
    pytest.param("/%09/evil.test", id="encoded-tab-between-slashes"),
    pytest.param("/x\r\nSet-Cookie:a=b", id="raw-crlf-header-injection"),
    pytest.param("/x%0d%0aSet-Cookie:%20a=b", id="encoded-crlf-in-path"),
    pytest.param("/%00", id="encoded-nul"),
    pytest.param(" /x", id="leading-space"),
    pytest.param("/a b", id="raw-space"),
    pytest.param("/x\x7f", id="raw-delete-character"),
    pytest.param("HTTPS://EVIL.TEST", id="foreign-origin-upper-case"),
    pytest.param("https://evil.test/", id="foreign-origin"),
    pytest.param("https://app.example.test@evil.test", id="app-host-as-userinfo"),
    pytest.param("https://user:pw@app.example.test/", id="userinfo-on-app-host"),
    pytest.param("https://app.example.test%2F@evil.test", id="encoded-slash-in-userinfo"),
    pytest.param("https://app.example.test:443@evil.test", id="port-as-userinfo"),
    pytest.param("https://evil.test#@app.example.test", id="fragment-at-trick"),
    pytest.param("https://evil.test?@app.example.test", id="query-at-trick"),
    pytest.param("https://evil.test\\@app.example.test", id="backslash-at-trick"),
    pytest.param("https://app.example.test.evil.test/", id="app-host-as-subdomain-of-evil"),
    pytest.param("https://evilapp.example.test/", id="suffix-lookalike"),
    pytest.param("https://evil.test/app.example.test", id="app-host-in-path"),
    pytest.param("https://app.example.test./", id="trailing-dot-host"),
    pytest.param("http://app.example.test/", id="scheme-downgrade"),
    pytest.param("https://app.example.test:8443/", id="app-host-other-port"),
    pytest.param("https://admin.example.test:444/", id="allowed-origin-other-port"),
    pytest.param("http://localhost/dev", id="allowed-origin-default-port-instead"),
    pytest.param("https://app.example.test:99999/", id="port-out-of-range"),
    pytest.param("https://app.example.test:abc/", id="port-not-a-number"),
    pytest.param("https://[::1]/", id="ipv6-literal-not-allowed"),
    pytest.param("https://app.example.test/%2F%2Fevil.test", id="absolute-with-encoded-double-slash-path"),
    pytest.param("https://app.example.test//evil.test", id="absolute-with-double-slash-path"),
    pytest.param("javascript:alert(1)", id="javascript-scheme"),
    pytest.param("JavaScript://app.example.test/%0aalert(1)", id="javascript-scheme-with-authority"),
    pytest.param("data:text/html;base64,PHNjcmlwdD4=", id="data-scheme"),
    pytest.param("vbscript:msgbox(1)", id="vbscript-scheme"),
    pytest.param("ftp://app.example.test/", id="ftp-scheme"),
    pytest.param("https://\u0430pp.example.test/", id="idn-cyrillic-a-homograph"),
    pytest.param("https://app.example.test\u3002evil.test/", id="idn-ideographic-full-stop"),
    pytest.param("/\uff0f\uff0fevil.test", id="fullwidth-solidus"),
    pytest.param("https://xn--pp-7kc.example.test/", id="punycode-homograph"),
    pytest.param("/caf\u00e9", id="raw-non-ascii-path"),
    pytest.param("orders", id="relative-without-leading-slash"),
    pytest.param("./orders", id="dot-relative"),
    pytest.param("?next=/x", id="query-only"),
    pytest.param("#frag", id="fragment-only"),
    pytest.param("/" + "a" * MAX_LENGTH, id="longer-than-max-relative"),
    pytest.param(f"{APP}/" + "a" * 2100, id="longer-than-max-absolute"),
]


@pytest.mark.parametrize(("candidate", "expected"), ACCEPTED)
def test_safe_return_to_resolves_to_an_absolute_url_on_an_allowed_origin(candidate, expected):
    assert POLICY.resolve(candidate) == expected


@pytest.mark.parametrize("candidate", REFUSED)
def test_unsafe_return_to_falls_back_to_app_url(candidate):
    assert POLICY.resolve(candidate) == APP_URL


def test_relative_path_means_a_path_on_the_app_origin_not_the_sidecar_origin():
    policy = ReturnToPolicy("https://app.example.test/home", [])
    # The sidecar may answer on api.example.test; the browser must still land on the SPA.
    assert policy.resolve("/orders") == "https://app.example.test/orders"


def test_app_url_path_is_not_a_prefix_for_relative_paths():
    assert POLICY.resolve("/x") == f"{APP}/x"


def test_allowed_origins_are_normalized_once():
    policy = ReturnToPolicy("https://app.example.test", ["HTTPS://Admin.Example.Test:443/"])
    assert policy.origins == {"https://app.example.test", "https://admin.example.test"}
    assert policy.resolve("https://admin.example.test/") == "https://admin.example.test/"


@pytest.mark.parametrize(
    ("app_url", "allowed"),
    [
        pytest.param("/relative", [], id="app-url-without-origin"),
        pytest.param("ftp://app.example.test", [], id="app-url-not-http"),
        pytest.param("https://app.example.test", ["app.example.test"], id="allowed-without-scheme"),
        pytest.param("https://app.example.test", ["https://u@admin.example.test"],
                     id="allowed-with-userinfo"),
    ],
)
def test_policy_refuses_unusable_configuration(app_url, allowed):
    with pytest.raises(ValueError, match="origin"):
        ReturnToPolicy(app_url, allowed)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        pytest.param("https://app.example.test", "https://app.example.test", id="plain"),
        pytest.param("HTTPS://APP.Example.TEST:443/x?y", "https://app.example.test",
                     id="case-and-default-port"),
        pytest.param("http://app.example.test:80", "http://app.example.test", id="http-default-port"),
        pytest.param("http://app.example.test:443", "http://app.example.test:443", id="https-port-on-http"),
        pytest.param("https://app.example.test:8443", "https://app.example.test:8443", id="custom-port"),
        pytest.param("https://[::1]:8443/", "https://[::1]:8443", id="ipv6-keeps-brackets"),
        pytest.param("https://u:p@app.example.test", None, id="userinfo"),
        pytest.param("https://app.ex\tample.test", None, id="tab-that-urlsplit-would-delete"),
        pytest.param("https://app.example.test:0x1bb", None, id="bad-port"),
        pytest.param("https://[::1", None, id="unclosed-ipv6"),
        pytest.param("null", None, id="null-origin"),
        pytest.param("file:///etc/passwd", None, id="file-scheme"),
        pytest.param("", None, id="empty"),
    ],
)
def test_origin_of_normalizes_or_refuses(url, origin):
    assert origin_of(url) == origin
