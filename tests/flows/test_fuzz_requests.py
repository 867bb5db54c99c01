"""Fuzzing a running sidecar with raw request heads: whatever the bytes, never a 5xx.

Each example puts hostile bytes in one place of an otherwise ordinary request — a sidecar cookie
(chunks included), ``Authorization``, ``X-Forwarded-*``, ``X-Request-Id``, ``Origin``, ``Referer``,
``Host``, the path, the query, or a parameter / body of an ``/auth/*`` route — sends it over a socket
to one stack shared by every example, and checks:

- the answer is not a 5xx (the provider and the app are up throughout);
- no log line tells of a crash (traceback, unhandled error, error level);
- a cookie or ``Authorization`` value is echoed neither in the answer nor in a log: such values are
  sent between two distinctive markers, and neither marker may show up (Hypothesis also draws the
  literals of the code under test, so a bare value may be a word the logs rightly contain);
- the next valid request succeeds.

Profiles: see ``tests/conftest.py`` (the CI one is derandomized and bounded).
"""

from __future__ import annotations

from urllib.parse import quote_from_bytes

from hypothesis import given
from hypothesis import strategies as st

from tests.flows.conftest import Stack
from tests.flows.hostile import echoes, request_bytes, send, server_errors

_COOKIES = ("access_token", "access_token.0", "access_token.1", "id_token", "id_token.0", "id_token.1",
            "refresh_token", "refresh_token.0", "XSRF-TOKEN", "authsidecar_tx")
_HEADERS = ("Authorization", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host",
            "X-Forwarded-Port", "X-Request-Id", "Origin", "Referer", "Host")
# (method, target) for a fuzzed header or cookie: the proxy, a public path and every /auth/* route.
_ROUTES = ((b"GET", b"/api/items"), (b"POST", b"/api/items"), (b"GET", b"/"), (b"GET", b"/auth/me"),
           (b"POST", b"/auth/refresh"), (b"POST", b"/auth/logout"), (b"GET", b"/auth/logout"),
           (b"GET", b"/auth/login"), (b"GET", b"/auth/callback?state=s&code=c"))
# Query parameters of the /auth/* routes, each fuzzed raw and percent-encoded.
_PARAMS = ((b"/auth/login", b"return_to"), (b"/auth/logout", b"return_to"),
           (b"/auth/callback", b"state"), (b"/auth/callback", b"code"), (b"/auth/callback", b"error"),
           (b"/auth/callback", b"error_description"))

_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _no_line_breaks(value: bytes) -> bytes:
    # CR and LF would end the header and start another one: the request's framing, not its content.
    return value.replace(b"\r", b"").replace(b"\n", b"")


_NASTY = st.sampled_from([
    b"\xff\xfe" * 20, b"caf\xe9-latin-1", b"\xc0\xaf\xc0\xaf", b"\xed\xa0\x80", b"\x00" * 9,
    b"eyJ\xff.eyJ.sig", b"a.b.c", b"..", b"%ff%fe", b"=?utf-8?b?w6k=?=", b"\x7f\x80\x81\x82\x83\x84\x85\x86",
])
_JWS_LIKE = st.lists(st.text(_B64URL, max_size=40), min_size=1, max_size=5).map(
    lambda parts: ".".join(parts).encode())
HOSTILE = st.one_of(
    st.binary(max_size=96),
    st.text(max_size=48).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.text(st.characters(max_codepoint=255), max_size=48).map(lambda t: t.encode("latin-1")),
    _NASTY, _JWS_LIKE,
).map(_no_line_breaks)
# Where the bytes go.
PLACE = st.one_of(
    st.tuples(st.just("cookie"), st.sampled_from(_COOKIES)),
    st.tuples(st.just("header"), st.sampled_from(_HEADERS)),
    st.tuples(st.just("path"), st.just("")),
    st.tuples(st.just("query"), st.just("")),
    st.tuples(st.just("param"), st.sampled_from([f"{p.decode()}?{n.decode()}" for p, n in _PARAMS])),
    st.tuples(st.just("body"), st.sampled_from(["/auth/refresh", "/auth/logout"])),
)


def _build(place: tuple[str, str], value: bytes, route: tuple[bytes, bytes], encode: bool,
           valid_token: str) -> bytes:
    kind, name = place
    method, target = route
    headers: list[tuple[bytes, bytes]] = [(b"Accept", b"application/json")]
    body = b""
    if kind == "cookie":
        headers.append((b"Cookie", name.encode() + b"=" + value))
    elif kind == "header":
        if name == "Authorization" and not encode:
            value = b"Bearer " + value
        headers.append((name.encode(), value))
    else:
        # The credential in these cases is a valid one: the bytes under test are elsewhere.
        headers.append((b"Authorization", b"Bearer " + valid_token.encode()))
        raw = quote_from_bytes(value).encode() if encode else value
        if kind == "path":
            method, target = b"GET", b"/api/" + raw
        elif kind == "query":
            method, target = b"GET", b"/api/items?" + raw
        elif kind == "param":
            path, param = name.encode().split(b"?")
            method, target = b"GET", path + b"?" + param + b"=" + raw
            if path == b"/auth/callback" and param != b"state":
                target += b"&state=s"
        else:
            method, target, body = b"POST", name.encode(), value
            headers.append((b"Content-Type", b"application/x-www-form-urlencoded"))
    return request_bytes(method, target, headers, body)


_MARKS = (b"zQ7kV", b"x9WvJ")


@given(place=PLACE, value=HOSTILE, encode=st.booleans(), marked=st.booleans())
async def test_no_bytes_in_any_place_get_a_5xx_a_crash_or_an_echo(
    stack: Stack, place: tuple[str, str], value: bytes, encode: bool, marked: bool
) -> None:
    valid = stack.provider.mint_access_token("alice")
    credential = place[0] == "cookie" or place[1] == "Authorization"
    if credential and marked:
        value = _MARKS[0] + value + _MARKS[1]
    # A cookie or a header goes to every route (each reads other ones); the rest has its own target.
    routes = _ROUTES if place[0] in ("cookie", "header") else _ROUTES[:1]

    for route in routes:
        since = len(stack.logs.getvalue())
        answer = await send(stack, _build(place, value, route, encode, valid))

        assert 0 < answer.status < 500, (route, answer.head, answer.body[:200])
        assert server_errors(stack, since) == []
        if credential and marked:
            logs = stack.logs.getvalue()[since:]
            assert not [mark for mark in _MARKS if echoes(mark, answer, logs)]
    bearer = [(b"Authorization", b"Bearer " + valid.encode())]
    after = await send(stack, request_bytes(b"GET", b"/api/items", bearer))
    assert after.status == 200


@given(cut=st.integers(min_value=0, max_value=2000), junk=HOSTILE,
       where=st.sampled_from(["cookie", "bearer"]))
async def test_a_valid_token_with_hostile_bytes_spliced_in_is_refused_cleanly(
    stack: Stack, cut: int, junk: bytes, where: str
) -> None:
    token = stack.provider.mint_access_token("alice").encode()
    cut %= len(token) + 1
    mangled = token[:cut] + junk + token[cut:]
    headers = [(b"Cookie", b"access_token=" + mangled) if where == "cookie"
               else (b"Authorization", b"Bearer " + mangled), (b"Accept", b"application/json")]
    since = len(stack.logs.getvalue())

    answer = await send(stack, request_bytes(b"GET", b"/api/items", headers))

    # Splicing in nothing, or bytes the header parser trims away, leaves the token valid.
    assert answer.status in (200, 400, 401), (answer.head, answer.body[:200])
    assert server_errors(stack, since) == []
