"""TransactionStore over real HTTP: a tiny app begins and takes login transactions in the cookie.

The client keeps the transaction cookie by hand (no cookie jar), so a test can replay an old value,
tamper with it, or carry it to another server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from sidecar.auth.cookies import CookiePolicy
from sidecar.auth.transaction import Transaction, TransactionStore
from sidecar.config import CookieSettings, CsrfSettings
from sidecar.errors import FlowRejected
from tests.conftest import FakeClock

SECRET = b"transaction-secret-0123456789-abcdefghij"
MAX_AGE = 600
COOKIE = "authsidecar_tx"
STORE = web.AppKey("store", TransactionStore)


def tiny_app(store: TransactionStore) -> web.Application:
    """POST /begin?state=&return_to= starts a transaction; GET /take?state= ends it (400 + reason)."""

    async def begin(request: web.Request) -> web.StreamResponse:
        store = request.app[STORE]
        response = web.Response(status=204)
        tx = Transaction(verifier="v" * 43, nonce="n-" + request.query["state"],
                         return_to=request.query.get("return_to", "/"), created=store.clock())
        await store.begin(request, response, request.query["state"], tx)
        return response

    async def take(request: web.Request) -> web.StreamResponse:
        response = web.json_response({})
        try:
            tx = await request.app[STORE].take(request, response, request.query["state"])
        except FlowRejected as exc:
            # Keep whatever take() wrote onto the response (a cleared or shrunk cookie).
            response.set_status(400)
            response.body = json.dumps({"reason": exc.reason}).encode()
            return response
        response.body = json.dumps({"nonce": tx["nonce"], "return_to": tx["return_to"]}).encode()
        return response

    app = web.Application()
    app[STORE] = store
    app.router.add_post("/begin", begin)
    app.router.add_get("/take", take)
    return app


def new_store(clock: FakeClock, secret: bytes = SECRET) -> TransactionStore:
    policy = CookiePolicy(CookieSettings(secure=False), CsrfSettings())
    return TransactionStore(secret, policy, MAX_AGE, clock)


@dataclass
class Browser:
    """Holds the transaction cookie by hand, as a browser would, and sends it raw."""

    http: aiohttp.ClientSession
    base: str
    cookie: str | None = None
    last_set_cookie: str | None = None

    def _keep(self, response: aiohttp.ClientResponse) -> None:
        self.last_set_cookie = None
        for header in response.headers.getall("Set-Cookie", ()):
            pair = header.split(";", 1)[0]
            name, _, value = pair.partition("=")
            if name == COOKIE:
                self.last_set_cookie = header
                self.cookie = value.strip('"') or None

    def _headers(self, cookie: str | None) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}

    async def begin(self, state: str, return_to: str = "/") -> None:
        async with self.http.post(self.base + "/begin", params={"state": state, "return_to": return_to},
                                  headers=self._headers(self.cookie)) as resp:
            assert resp.status == 204, await resp.text()
            self._keep(resp)

    async def take(
        self, state: str, *, cookie: str | None = None, raw: bool = False
    ) -> tuple[int, dict[str, str]]:
        sent = cookie if raw else self.cookie
        async with self.http.get(self.base + "/take", params={"state": state},
                                 headers=self._headers(sent)) as resp:
            body: dict[str, str] = await resp.json()
            self._keep(resp)
            return resp.status, body


Start = Callable[..., Awaitable[Browser]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


@pytest.fixture
def start(aiohttp_server: AiohttpServer, http: aiohttp.ClientSession, clock: FakeClock) -> Start:
    async def run(store: TransactionStore | None = None) -> Browser:
        store = store or new_store(clock)
        server = await aiohttp_server(tiny_app(store), host="127.0.0.1")
        return Browser(http, str(server.make_url("")).rstrip("/"))

    return run


async def test_a_transaction_is_taken_once_with_what_began_it(start: Start) -> None:
    browser = await start()
    await browser.begin("s1", return_to="/after")
    assert browser.last_set_cookie is not None
    attrs = browser.last_set_cookie.lower()
    assert "httponly" in attrs
    assert "path=/" in attrs
    assert "samesite=lax" in attrs

    assert await browser.take("s1") == (200, {"nonce": "n-s1", "return_to": "/after"})
    # The last transaction taken: the cookie is cleared with the attributes it was set with.
    assert browser.last_set_cookie is not None
    assert browser.cookie is None
    assert "max-age=0" in browser.last_set_cookie.lower()
    assert "path=/" in browser.last_set_cookie.lower()


@pytest.mark.parametrize(
    ("setup", "state", "reason"),
    [
        pytest.param((), "s1", "missing_transaction", id="no-cookie"),
        pytest.param(("s1",), "other", "state_mismatch", id="unknown-state"),
        pytest.param(("s1",), "", "state_mismatch", id="empty-state"),
        pytest.param(("s1", "s2"), "S1", "state_mismatch", id="state-is-case-sensitive"),
    ],
)
async def test_a_callback_without_its_transaction_is_refused(
    start: Start, setup: tuple[str, ...], state: str, reason: str
) -> None:
    browser = await start()
    for began in setup:
        await browser.begin(began)
    assert await browser.take(state) == (400, {"reason": reason})


async def test_an_unknown_state_leaves_the_pending_transactions_alone(start: Start) -> None:
    browser = await start()
    await browser.begin("s1")
    assert (await browser.take("forged"))[0] == 400
    assert browser.last_set_cookie is None
    assert await browser.take("s1") == (200, {"nonce": "n-s1", "return_to": "/"})


async def test_a_replayed_callback_is_refused_even_with_the_old_cookie(start: Start) -> None:
    browser = await start()
    await browser.begin("s1")
    before = browser.cookie
    assert (await browser.take("s1"))[0] == 200

    assert await browser.take("s1", cookie=before, raw=True) == (400, {"reason": "replayed_callback"})
    assert await browser.take("s1") == (400, {"reason": "replayed_callback"})


async def test_logins_begun_in_several_tabs_each_complete_in_any_order(start: Start) -> None:
    browser = await start()
    for state in ("s1", "s2", "s3"):
        await browser.begin(state, return_to=f"/{state}")
    for state in ("s2", "s3", "s1"):
        assert await browser.take(state) == (200, {"nonce": f"n-{state}", "return_to": f"/{state}"})
    assert browser.cookie is None


async def test_past_four_pending_logins_the_oldest_is_dropped(start: Start) -> None:
    browser = await start()
    for i in range(6):
        await browser.begin(f"s{i}")
    assert await browser.take("s0") == (400, {"reason": "state_mismatch"})
    assert await browser.take("s1") == (400, {"reason": "state_mismatch"})
    for i in range(2, 6):
        assert (await browser.take(f"s{i}"))[0] == 200


async def test_the_cookie_stays_small_by_dropping_the_oldest_large_transactions(start: Start) -> None:
    browser = await start()
    long_return_to = "/" + "x" * 1000
    for i in range(3):
        await browser.begin(f"s{i}", return_to=long_return_to)
        assert browser.last_set_cookie is not None
        assert len(browser.last_set_cookie) < 4096
    assert await browser.take("s0") == (400, {"reason": "state_mismatch"})
    assert (await browser.take("s2"))[0] == 200


async def test_one_transaction_too_large_for_the_budget_is_still_kept(start: Start) -> None:
    browser = await start()
    await browser.begin("s1", return_to="/" + "x" * 2500)
    assert (await browser.take("s1"))[0] == 200


@pytest.mark.parametrize(
    ("age", "status"),
    [(MAX_AGE - 1, 200), (MAX_AGE, 200), (MAX_AGE + 1, 400), (10 * MAX_AGE, 400)],
    ids=["just-inside", "at-the-limit", "just-past", "long-past"],
)
async def test_a_transaction_older_than_its_max_age_is_refused_and_removed(
    start: Start, clock: FakeClock, age: int, status: int
) -> None:
    browser = await start()
    await browser.begin("s1")
    clock.advance(age)
    answer = await browser.take("s1")
    assert answer[0] == status
    if status == 400:
        assert answer[1] == {"reason": "expired_transaction"}
    assert browser.cookie is None


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda v: v[:-4] + ("BBBB" if v.endswith("AAAA") else "AAAA"), id="last-bytes-changed"),
        pytest.param(lambda v: v[: len(v) // 2], id="truncated"),
        pytest.param(lambda v: "not-a-fernet-token", id="replaced"),
        pytest.param(lambda v: v + "A", id="one-byte-added"),
    ],
)
async def test_a_tampered_cookie_is_no_transaction(start: Start, tamper: Callable[[str], str]) -> None:
    browser = await start()
    await browser.begin("s1")
    assert browser.cookie is not None
    forged = tamper(browser.cookie)
    assert await browser.take("s1", cookie=forged, raw=True) == (400, {"reason": "missing_transaction"})


async def test_another_replica_with_the_same_secret_completes_the_login(
    start: Start, clock: FakeClock
) -> None:
    first = await start(new_store(clock))
    second = await start(new_store(clock))
    await first.begin("s1")
    answer = await second.take("s1", cookie=first.cookie, raw=True)
    assert answer == (200, {"nonce": "n-s1", "return_to": "/"})


async def test_a_cookie_sealed_with_another_secret_is_no_transaction(start: Start, clock: FakeClock) -> None:
    first = await start(new_store(clock))
    other = await start(new_store(clock, secret=b"another-secret-0123456789-abcdefghijklm"))
    await first.begin("s1")
    assert await other.take("s1", cookie=first.cookie, raw=True) == (400, {"reason": "missing_transaction"})
